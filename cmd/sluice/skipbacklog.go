package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// cmdSkipBacklog is `sluice skip-backlog`: it asks a running job (its
// --http API) to make its sources skip to their newest data.
func cmdSkipBacklog(args []string) int {
	fs := flag.NewFlagSet("skip-backlog", flag.ContinueOnError)
	job := fs.String("job", env("SLUICE_JOB", "http://127.0.0.1:8081"), "the job's REST API, as given to sluice run --http")
	node := fs.String("node", "", "only this source node (default: every source that can skip)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sluice skip-backlog: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	rep, err := requestSkipBacklog(ctx, *job, *node)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice skip-backlog: %v\n", err)
		return 1
	}
	fmt.Printf("skipped the backlog: %s\n", strings.Join(rep.Skipped, ", "))
	if len(rep.Unsupported) > 0 {
		fmt.Printf("sources that cannot skip (left as they were): %s\n", strings.Join(rep.Unsupported, ", "))
	}
	return 0
}

// jobURL accepts host:port as well as a URL.
func jobURL(base, path string) (string, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("--job %q is not a URL such as http://127.0.0.1:8081", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	return u.String(), nil
}

func requestSkipBacklog(ctx context.Context, job, node string) (*skipBacklogReply, error) {
	u, err := jobURL(job, "/v1/skip-backlog")
	if err != nil {
		return nil, err
	}
	if node != "" {
		u += "?node=" + url.QueryEscape(node)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the job at %s: %w", job, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", u, err)
	}
	var rep skipBacklogReply
	if err := json.Unmarshal(body, &rep); err != nil {
		return nil, fmt.Errorf("%s answered %s, not JSON: %.200q", u, resp.Status, body)
	}
	if resp.StatusCode != http.StatusOK || rep.Error != "" {
		msg := rep.Error
		if msg == "" {
			msg = resp.Status
		}
		if len(rep.Skipped) > 0 {
			msg += fmt.Sprintf(" (these subtasks did skip: %s)", strings.Join(rep.Skipped, ", "))
		}
		return nil, fmt.Errorf("%s (HTTP %d)", msg, resp.StatusCode)
	}
	return &rep, nil
}
