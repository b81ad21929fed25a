package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// The CLI of the dispatcher's REST API: sluice submit, list, status,
// cancel, savepoint, rescale, upgrade, skip-backlog (docs/dispatcher.md). Exit
// codes, which scripts may rely on:
const (
	exitOK          = 0
	exitAPIError    = 1 // the API refused or failed the request (400, 413, 500, …)
	exitUsage       = 2 // bad flags or arguments, an unreadable file
	exitUnreachable = 3 // no answer from the dispatcher (connection, TLS)
	exitNotFound    = 4 // no such job (404)
	exitAuth        = 5 // missing or wrong token (401)
	exitConflict    = 6 // the job is not in a state for it (409): ended, not running
	exitUnavailable = 7 // the dispatcher cannot store anything now (503): try again
)

// client is one CLI command's connection to the dispatcher.
type client struct {
	name    string // the command, for messages
	base    string
	token   string
	json    bool
	http    *http.Client
	fs      *flag.FlagSet
	caFile  *string
	tokenFn *string
	url     *string
}

func newClient(name string) *client {
	c := &client{name: name, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.url = c.fs.String("dispatcher", env("SLUICE_DISPATCHER", "http://127.0.0.1:8090"), "the dispatcher's URL")
	c.tokenFn = c.fs.String("token-file", env("SLUICE_TOKEN_FILE", ""), "a file holding the dispatcher's bearer token")
	c.caFile = c.fs.String("ca-file", env("SLUICE_CA_FILE", ""), "trust this CA certificate (PEM) for an https dispatcher")
	c.fs.BoolVar(&c.json, "json", false, "print the API's JSON answer (for scripts)")
	return c
}

// parse parses flags anywhere among the arguments (`cancel ID
// --savepoint`) and checks the number of positional arguments.
func (c *client) parse(args []string, want int, usage string) ([]string, int) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, exitUsage
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != want {
		fmt.Fprintf(os.Stderr, "usage: sluice %s\n", usage)
		return nil, exitUsage
	}
	c.base = strings.TrimRight(*c.url, "/")
	if *c.tokenFn != "" {
		b, err := os.ReadFile(*c.tokenFn)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice %s: --token-file: %v\n", c.name, err)
			return nil, exitUsage
		}
		c.token = strings.TrimSpace(string(b))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *c.caFile != "" {
		pem, err := os.ReadFile(*c.caFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice %s: --ca-file: %v\n", c.name, err)
			return nil, exitUsage
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "sluice %s: --ca-file %s: no PEM certificate\n", c.name, *c.caFile)
			return nil, exitUsage
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c.http = &http.Client{Transport: tr, Timeout: 15 * time.Minute}
	return pos, exitOK
}

// do calls the API; on a 2xx it decodes into out (and prints the JSON
// with --json), else it prints the API's error as it gave it and returns
// the exit code for its status.
func (c *client) do(method, path string, body []byte, contentType string, out any) int {
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", c.name, err)
		return exitUsage
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: the dispatcher at %s did not answer: %v\n", c.name, c.base, err)
		return exitUnreachable
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: reading the answer: %v\n", c.name, err)
		return exitUnreachable
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if c.json {
			os.Stdout.Write(b)
		}
		fmt.Fprintf(os.Stderr, "sluice %s: %s: %s\n", c.name, resp.Status, msg)
		switch resp.StatusCode {
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusUnauthorized:
			return exitAuth
		case http.StatusConflict:
			return exitConflict
		case http.StatusServiceUnavailable:
			return exitUnavailable
		}
		return exitAPIError
	}
	if c.json {
		os.Stdout.Write(b)
		return exitOK
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			fmt.Fprintf(os.Stderr, "sluice %s: decoding the answer: %v\n", c.name, err)
			return exitAPIError
		}
	}
	return exitOK
}

func jobPath(id string, rest string) string { return "/v1/jobs/" + url.PathEscape(id) + rest }

func cmdSubmit(args []string) int {
	c := newClient("submit")
	sp := c.fs.String("savepoint", "", "start the job from this savepoint (or checkpoint) path")
	pos, code := c.parse(args, 1, "submit [--savepoint PATH] JOB")
	if code != exitOK {
		return code
	}
	body, err := os.ReadFile(pos[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice submit: %v\n", err)
		return exitUsage
	}
	path := "/v1/jobs"
	if *sp != "" {
		path += "?savepoint=" + url.QueryEscape(*sp)
	}
	ct := "application/json"
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		ct = "application/yaml"
	}
	var rep struct {
		ID, Name, State string
	}
	if code := c.do("POST", path, body, ct, &rep); code != exitOK || c.json {
		return code
	}
	fmt.Printf("job %s (%s) submitted: %s\n", rep.ID, rep.Name, rep.State)
	return exitOK
}

func cmdList(args []string) int {
	c := newClient("list")
	if _, code := c.parse(args, 0, "list"); code != exitOK {
		return code
	}
	var rep struct {
		Jobs []dispatcher.JobSummary `json:"jobs"`
	}
	if code := c.do("GET", "/v1/jobs", nil, "", &rep); code != exitOK || c.json {
		return code
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tRUN\tSUBMITTED")
	for _, j := range rep.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", j.ID, j.Name, j.State, j.Run, j.Submitted.Local().Format(time.DateTime))
	}
	tw.Flush()
	return exitOK
}

func cmdStatus(args []string) int {
	c := newClient("status")
	pos, code := c.parse(args, 1, "status ID")
	if code != exitOK {
		return code
	}
	var st dispatcher.JobStatus
	if code := c.do("GET", jobPath(pos[0], ""), nil, "", &st); code != exitOK || c.json {
		return code
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("ID", st.ID)
	row("NAME", st.Name)
	row("STATE", string(st.State))
	row("REASON", st.Reason)
	row("RUN", strconv.Itoa(st.Run))
	if st.Parallelism > 0 {
		row("PARALLELISM", strconv.Itoa(st.Parallelism))
	}
	row("SUBMITTED", st.Submitted.Local().Format(time.DateTime))
	row("RESTARTS", fmt.Sprintf("%d (masters started %d, restarted %d)", st.Restarts, st.MasterLaunches, st.MasterRestarts))
	if m := st.Master; m != nil {
		row("MASTER", fmt.Sprintf("%s on %s, epoch %d, REST http://%s", m.Process, m.Host, m.Epoch, m.HTTP))
	}
	if cp := st.LatestCheckpoint; cp != nil {
		row("CHECKPOINT", fmt.Sprintf("%d %s", cp.ID, cp.Path))
	}
	row("SAVEPOINT", st.LastSavepoint)
	row("RESTORED FROM", st.RestoredFrom)
	tw.Flush()
	if len(st.TaskManagers) > 0 {
		fmt.Println()
		tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TASKMANAGER\tRESOURCE\tHOST\tSLOTS\tTASKS")
		for _, t := range st.TaskManagers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", t.ID, t.ResourceID, t.Host, t.Slots, strings.Join(t.Tasks, ","))
		}
		tw.Flush()
	}
	return exitOK
}

func cmdCancel(args []string) int {
	c := newClient("cancel")
	sp := c.fs.Bool("savepoint", false, "write a final savepoint first (the job keeps running when it fails)")
	pos, code := c.parse(args, 1, "cancel [--savepoint] ID")
	if code != exitOK {
		return code
	}
	path := jobPath(pos[0], "")
	if *sp {
		path += "?savepoint=true"
	}
	var rep struct {
		ID, State, Savepoint string
	}
	if code := c.do("DELETE", path, nil, "", &rep); code != exitOK || c.json {
		return code
	}
	fmt.Printf("job %s: %s\n", rep.ID, rep.State)
	if rep.Savepoint != "" {
		fmt.Printf("savepoint: %s\n", rep.Savepoint)
	}
	return exitOK
}

func cmdSavepoint(args []string) int {
	c := newClient("savepoint")
	every := c.progressFlag()
	pos, code := c.parse(args, 1, "savepoint [--progress-every D] ID")
	if code != exitOK {
		return code
	}
	var rep struct{ Path string }
	w := c.watchProgress(pos[0], runtime.ProgressSavepoint, *every)
	code = c.do("POST", jobPath(pos[0], "/savepoints"), nil, "", &rep)
	w.stop()
	if code != exitOK || c.json {
		return code
	}
	fmt.Printf("savepoint: %s\n", rep.Path)
	return exitOK
}

func cmdRescale(args []string) int {
	c := newClient("rescale")
	every := c.progressFlag()
	wait := c.fs.Bool("wait", false, "also wait until the new run restored the savepoint (the rescale's restore phase)")
	pos, code := c.parse(args, 2, "rescale [--wait] [--progress-every D] ID PARALLELISM")
	if code != exitOK {
		return code
	}
	n, err := strconv.Atoi(pos[1])
	if err != nil || n < 1 {
		fmt.Fprintf(os.Stderr, "sluice rescale: parallelism %q: want a number ≥ 1\n", pos[1])
		return exitUsage
	}
	body, _ := json.Marshal(dispatcher.RescaleRequest{Parallelism: n})
	var rep dispatcher.RescaleReply
	w := c.watchProgress(pos[0], runtime.ProgressRescale, *every)
	code = c.do("POST", jobPath(pos[0], "/rescale"), body, "application/json", &rep)
	restored := true
	if code == exitOK && *wait {
		ctx, cancel := context.WithTimeout(context.Background(), c.http.Timeout)
		op := w.waitEnd(ctx)
		cancel()
		restored = op != nil && op.State == runtime.ProgressDone
	}
	w.stop()
	if !restored {
		fmt.Fprintf(os.Stderr, "sluice rescale: the new run did not restore the savepoint (see sluice status %s)\n", pos[0])
		return exitAPIError
	}
	if code != exitOK || c.json {
		return code
	}
	fmt.Printf("job %s: run %d with parallelism %d from savepoint %s: %s\n", rep.ID, rep.Run, rep.Parallelism, rep.Savepoint, rep.State)
	return exitOK
}

// cmdUpgrade is `sluice upgrade ID JOB`: the asynchronous upgrade of a
// running job to the spec in the file JOB.
func cmdUpgrade(args []string) int {
	c := newClient("upgrade")
	timeout := c.fs.Duration("timeout", 0, "how long the new version's TaskManagers may take to register (default: the dispatcher's, 3m)")
	every := c.progressFlag()
	pos, code := c.parse(args, 2, "upgrade [--timeout D] [--progress-every D] ID JOB")
	if code != exitOK {
		return code
	}
	body, err := os.ReadFile(pos[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice upgrade: %v\n", err)
		return exitUsage
	}
	path := jobPath(pos[0], "/upgrade")
	if *timeout > 0 {
		path += "?timeout=" + url.QueryEscape(timeout.String())
	}
	ct := "application/json"
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		ct = "application/yaml"
	}
	var rep dispatcher.UpgradeReply
	w := c.watchProgress(pos[0], runtime.ProgressUpgrade, *every)
	code = c.do("POST", path, body, ct, &rep)
	w.stop()
	if code != exitOK || c.json {
		return code
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\t%s\n", rep.ID)
	fmt.Fprintf(tw, "STATE\t%s\n", rep.State)
	fmt.Fprintf(tw, "RUN\t%d (was %d)\n", rep.Run, rep.PreviousRun)
	fmt.Fprintf(tw, "SAVEPOINT\t%s\n", rep.Savepoint)
	fmt.Fprintf(tw, "DOWNTIME\t%v (output stopped: old version's savepoint to new version running)\n", time.Duration(rep.DowntimeMs)*time.Millisecond)
	fmt.Fprintf(tw, "STANDBY\t%v (%d TaskManagers registered while the old version ran)\n", time.Duration(rep.StandbyMs)*time.Millisecond, rep.TaskManagers)
	tw.Flush()
	return exitOK
}

// cmdSkipBacklogJob is `sluice skip-backlog ID` against the dispatcher;
// with --http ADDR it is the older client of one master's API.
func cmdSkipBacklogJob(args []string) int {
	c := newClient("skip-backlog")
	node := c.fs.String("node", "", "only this source node")
	pos, code := c.parse(args, 1, "skip-backlog [--node ID] JOB-ID")
	if code != exitOK {
		return code
	}
	path := jobPath(pos[0], "/skip-backlog")
	if *node != "" {
		path += "?node=" + url.QueryEscape(*node)
	}
	var rep struct {
		Skipped     []string `json:"skipped"`
		Unsupported []string `json:"unsupported"`
	}
	if code := c.do("POST", path, nil, "", &rep); code != exitOK || c.json {
		return code
	}
	fmt.Printf("skipped: %s\n", strings.Join(rep.Skipped, " "))
	if len(rep.Unsupported) > 0 {
		fmt.Printf("cannot skip: %s\n", strings.Join(rep.Unsupported, " "))
	}
	return exitOK
}

// cmdSkipBacklogAny is `sluice skip-backlog`: with a job id, through the
// dispatcher (cmdSkipBacklogJob); with --job URL or no argument, straight
// to one master's API (cmdSkipBacklog), as before the dispatcher.
func cmdSkipBacklogAny(args []string) int {
	probe := newClient("skip-backlog")
	probe.fs.String("node", "", "")
	probe.fs.SetOutput(io.Discard)
	n := 0
	rest := args
	for {
		if err := probe.fs.Parse(rest); err != nil {
			return cmdSkipBacklog(args) // its flags (--job, --timeout)
		}
		if rest = probe.fs.Args(); len(rest) == 0 {
			break
		}
		n++
		rest = rest[1:]
	}
	if n == 0 {
		return cmdSkipBacklog(args)
	}
	return cmdSkipBacklogJob(args)
}
