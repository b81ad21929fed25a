package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/internal/procs"
)

// TestWebUI drives the web UI in headless Chromium (Debian's chromium,
// which `make chromium` installs) against a running dispatcher with the
// local resource manager: the token prompt, a spec the dispatcher refuses
// (its error shown inline), a job submitted through the form that runs
// with rising counts, its graph, checkpoints, TaskManagers and Kafka lag,
// a savepoint and a cancel from the buttons, and the master's own UI. A
// screenshot of each view goes to the test's artifact directory (kept
// with `go test -artifacts -outputdir DIR`).
func TestWebUI(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium on PATH (`make chromium` installs Debian's): %v", err)
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	shots := t.ArtifactDir()
	t.Logf("screenshots: %s", shots)

	const tok = "ui-t0ken"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	compact, err := os.ReadFile(dispatcherJob(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var pretty bytes.Buffer // as a person would paste it
	if err := json.Indent(&pretty, compact, "", "  "); err != nil {
		t.Fatal(err)
	}
	good := pretty.Bytes()
	bad := bytes.Replace(good, []byte(`"type": "window"`), []byte(`"type": "windw"`), 1)
	if bytes.Equal(bad, good) {
		t.Fatal("could not break the spec")
	}
	_, url, dlog := startDispatcher(t, dir, "file://"+filepath.Join(dir, "store"), tokenFile)

	// An API client asking for / gets JSON; a browser is sent to /ui/.
	if resp, err := http.Get(url + "/"); err != nil || resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		t.Fatalf("GET / as an API client: %v %v", resp, err)
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(dir, "chromium")), chromedp.WindowSize(1360, 900))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	fail := func(what string, err error) {
		t.Helper()
		page, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("%s: %v\npage: %s\ndispatcher log:\n%s", what, err, tail(page, 2000), tail(dlog.String(), 3000))
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	text := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		s, err := chromedp.Run(ctx, a)
		if err != nil {
			fail(what, err)
		}
		return s
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		if err != nil {
			fail("count "+sel, err)
		}
		return n
	}
	shot := func(name string) {
		t.Helper()
		run("settle", chromedp.Sleep(300*time.Millisecond))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			fail("screenshot "+name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// waitText polls sel's text until ok accepts it.
	waitText := func(what, sel string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			run(what, chromedp.WaitReady(chromedp.CSS(sel)))
			s := text(what, chromedp.TextContent(chromedp.CSS(sel)))
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %q after 90s\ndispatcher log:\n%s", what, s, tail(dlog.String(), 3000))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// The token prompt (the API answers 401 without it).
	run("open the UI", chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("token-input")))
	run("give the token", chromedp.SendKeys(chromedp.ID("token-input"), tok), chromedp.Click(chromedp.ID("modal-ok")))
	waitText("the empty jobs list", "#jobs-summary", func(s string) bool { return strings.Contains(s, "No jobs") })

	// A spec the dispatcher refuses: its error inline, nothing submitted.
	run("open the form", chromedp.Click(chromedp.ID("nav-submit")), chromedp.WaitVisible(chromedp.ID("spec")),
		chromedp.SetValue(chromedp.ID("spec"), string(bad)), chromedp.Click(chromedp.ID("submit-button")),
		chromedp.WaitVisible(chromedp.ID("spec-error")))
	waitText("the inline error", "#spec-error", func(s string) bool { return strings.Contains(s, "invalid job spec") && strings.Contains(s, "windw") })
	shot("submit-invalid")

	// The good one: the form sends the browser to the job's graph.
	run("submit", chromedp.SetValue(chromedp.ID("spec"), string(good)), chromedp.Click(chromedp.ID("submit-button")),
		chromedp.WaitVisible(chromedp.ID("graph")))
	loc := text("the job's page", chromedp.Location())
	m := regexp.MustCompile(`#/job/([0-9a-f]+)/graph$`).FindStringSubmatch(loc)
	if m == nil {
		t.Fatalf("after submitting: %s", loc)
	}
	id := m[1]
	waitText("RUNNING", "#job-state", func(s string) bool { return s == "RUNNING" })

	// The graph: three vertices, two edges; the source's count rises.
	srcRows := func(s string) int64 {
		m := regexp.MustCompile(`out (\d+)`).FindStringSubmatch(s)
		if m == nil {
			return -1
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	const srcTitle = `g.vertex[data-id="src"] title`
	nv, ne := count("g.vertex"), count("path.edge")
	if nv != 3 || ne != 2 {
		t.Fatalf("graph: %d vertices, %d edges; want 3 and 2", nv, ne)
	}
	first := srcRows(waitText("the source's rows", srcTitle, func(s string) bool { return srcRows(s) >= 0 }))
	waitText("a rate on the source", `g.vertex[data-id="src"] .vertex-rate`, func(s string) bool { return regexp.MustCompile(`out [0-9.]+ ?[kM]?/s`).MatchString(s) })
	waitText("the source's rows rising", srcTitle, func(s string) bool { return srcRows(s) > first })
	run("select a vertex", chromedp.Click(chromedp.CSS(`g.vertex[data-id="win"]`)), chromedp.WaitVisible(chromedp.CSS("#vertex-details table")))
	shot("job-graph")

	// The jobs list: the job RUNNING with its rates.
	run("jobs list", chromedp.Navigate(url+"/ui/#/jobs"))
	waitText("the job's row", fmt.Sprintf(`tr[data-id="%s"] .rate-in`, id), func(s string) bool { return strings.HasSuffix(s, "/s") })
	shot("jobs")

	// Checkpoints, then a savepoint from its button.
	run("checkpoints", chromedp.Navigate(url+"/ui/#/job/"+id+"/checkpoints"))
	waitText("checkpoints", "#cp-completed", func(s string) bool { n, _ := strconv.Atoi(s); return n >= 2 })
	run("savepoint", chromedp.WaitEnabled(chromedp.ID("act-savepoint")), chromedp.Click(chromedp.ID("act-savepoint")),
		chromedp.WaitVisible(chromedp.ID("modal-ok")), chromedp.Click(chromedp.ID("modal-ok")))
	waitText("the savepoint's toast", "#toast", func(s string) bool { return strings.HasPrefix(s, "Savepoint written: file://") })
	waitText("the savepoint counted", "#cp-savepoints", func(s string) bool { return s == "1" })
	waitText("the savepoint in the history", "#checkpoint-list", func(s string) bool { return strings.Contains(s, "savepoint") })
	shot("checkpoints")

	run("TaskManagers", chromedp.Click(chromedp.ID("tab-taskmanagers")), chromedp.WaitVisible(chromedp.CSS(".tm-row")))
	shot("taskmanagers")

	// Kafka lag: the job has no Kafka source; until the master serves
	// /v1/kafka-lag the page says it is not available.
	run("Kafka lag", chromedp.Click(chromedp.ID("tab-kafka")))
	waitText("Kafka lag", "#kafka-list", func(s string) bool {
		return strings.Contains(s, "not available") || strings.Contains(s, "no Kafka source")
	})
	shot("kafka-lag")

	// The master serves the same UI for its own job.
	st := dispatcherStatus(t, url, tokenFile, id)
	if st.Master == nil || st.Master.HTTP == "" {
		t.Fatalf("no master address: %+v", st)
	}
	resp, err := http.Get("http://" + st.Master.HTTP + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(page, []byte(`content="master"`)) {
		t.Fatalf("the master's /ui/: %d %s", resp.StatusCode, page)
	}
	run("the master's UI", chromedp.Navigate("http://"+st.Master.HTTP+"/"), chromedp.WaitVisible(chromedp.CSS(`g.vertex[data-id="out"]`)))
	waitText("the master's job", "#job-title", func(s string) bool { return s != "Job" && s != "" })
	waitText("a rate in the master's UI", `g.vertex[data-id="src"] .vertex-rate`, func(s string) bool { return strings.HasSuffix(s, "/s") && !strings.Contains(s, "–") })
	shot("master-graph")

	// Cancel from its button, with confirmation.
	run("back to the dispatcher", chromedp.Navigate(url+"/ui/#/job/"+id+"/graph"))
	waitText("RUNNING", "#job-state", func(s string) bool { return s == "RUNNING" })
	run("cancel", chromedp.WaitEnabled(chromedp.ID("act-cancel")), chromedp.Click(chromedp.ID("act-cancel")),
		chromedp.WaitVisible(chromedp.ID("modal-ok")), chromedp.Click(chromedp.ID("modal-ok")))
	waitText("CANCELED", "#job-state", func(s string) bool { return s == "CANCELED" })
	if st := dispatcherStatus(t, url, tokenFile, id); st.State != dispatcher.Canceled {
		t.Fatalf("after cancel: %s", st.State)
	}
	shot("job-canceled")
	run("jobs list", chromedp.Navigate(url+"/ui/#/jobs"))
	waitText("the job's row", fmt.Sprintf(`tr[data-id="%s"]`, id), func(s string) bool { return strings.Contains(s, "CANCELED") })
}
