package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
	"github.com/sluice-stream/sluice/internal/webui"
)

// TestWebUI drives the web UI in headless Chromium (Debian's chromium,
// which `make chromium` installs) against a running dispatcher with the
// local resource manager: the token prompt, a spec the dispatcher refuses
// (its error shown inline), a job submitted through the form that runs
// with rising counts, its graph, checkpoints, TaskManagers and Kafka lag,
// a savepoint and a cancel from the buttons, and the master's own UI;
// before that, the views of /v1/kafka-lag and /v1/progress against a
// stand-in master (contractViews). A screenshot of each view goes to the
// test's artifact directory (kept with `go test -artifacts -outputdir DIR`).
func TestWebUI(t *testing.T) {
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
	began := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(began).Seconds(), what) }

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

	phase("dispatcher listening")
	b := newUIBrowser(t, dir, shots, dlog.String)
	phase("chromium started")

	// First the views of routes other helpers are building, on a stand-in.
	contractViews(t, b)
	phase("contract views")
	run, text, count, shot, waitText := b.run, b.text, b.count, b.shot, b.waitText

	// The token prompt (the API answers 401 without it).
	run("open the UI", chromedp.Navigate(url+"/"), chromedp.WaitVisible(chromedp.ID("token-input")))
	run("give the token", chromedp.SendKeys(chromedp.ID("token-input"), tok), chromedp.Click(chromedp.ID("modal-ok")))
	waitText("the empty jobs list", "#jobs-summary", func(s string) bool { return strings.Contains(s, "No jobs") })
	// From here on the pages poll every 500 ms (the token stays in the tab).
	ui := url + "/ui/?poll=500"
	run("poll faster", chromedp.Navigate(ui+"#/jobs"))
	waitText("the empty jobs list", "#jobs-summary", func(s string) bool { return strings.Contains(s, "No jobs") })

	// A spec the dispatcher refuses, uploaded from a file: its error
	// inline, nothing submitted.
	badFile := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badFile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	run("open the form", chromedp.Click(chromedp.ID("nav-submit")), chromedp.WaitVisible(chromedp.ID("spec")),
		chromedp.SetUploadFiles(chromedp.ID("spec-file"), []string{badFile}))
	waitText("the uploaded spec", "#spec", func(string) bool { return true })
	if v := text("the uploaded spec", chromedp.Value(chromedp.ID("spec"))); !strings.Contains(v, "windw") {
		t.Fatalf("the upload did not fill the form: %q", v)
	}
	run("submit the bad spec", chromedp.Click(chromedp.ID("submit-button")), chromedp.WaitVisible(chromedp.ID("spec-error")))
	waitText("the inline error", "#spec-error", func(s string) bool { return strings.Contains(s, "invalid job spec") && strings.Contains(s, "windw") })
	shot("submit-invalid")
	phase("submit-invalid")

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
	phase("submitted and RUNNING")

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
	b.click("select a vertex", `g.vertex[data-id="win"]`)
	b.waitFor("the vertex's subtasks", "#vertex-details table")
	shot("job-graph")
	phase("job-graph")

	// The jobs list: the job RUNNING with its rates.
	run("jobs list", chromedp.Navigate(ui+"#/jobs"))
	waitText("the job's row", fmt.Sprintf(`tr[data-id="%s"] .rate-in`, id), func(s string) bool { return strings.HasSuffix(s, "/s") })
	shot("jobs")
	phase("jobs")

	// Checkpoints, then a savepoint from its button.
	run("checkpoints", chromedp.Navigate(ui+"#/job/"+id+"/checkpoints"))
	waitText("checkpoints", "#cp-completed", func(s string) bool { n, _ := strconv.Atoi(s); return n >= 2 })
	run("savepoint", chromedp.WaitEnabled(chromedp.ID("act-savepoint")), chromedp.Click(chromedp.ID("act-savepoint")),
		chromedp.WaitVisible(chromedp.ID("modal-ok")), chromedp.Click(chromedp.ID("modal-ok")))
	waitText("the savepoint's toast", "#toast", func(s string) bool { return strings.HasPrefix(s, "Savepoint written: file://") })
	waitText("the savepoint counted", "#cp-savepoints", func(s string) bool { return s == "1" })
	waitText("the savepoint in the history", "#checkpoint-list", func(s string) bool { return strings.Contains(s, "savepoint") })
	shot("checkpoints")
	phase("checkpoints")

	run("TaskManagers", chromedp.Click(chromedp.ID("tab-taskmanagers")))
	b.waitFor("the TaskManagers", ".tm-row")
	shot("taskmanagers")
	phase("taskmanagers")

	// Kafka lag: the job has no Kafka source; until the master serves
	// /v1/kafka-lag the page says it is not available.
	run("Kafka lag", chromedp.Click(chromedp.ID("tab-kafka")))
	waitText("Kafka lag", "#kafka-list", func(s string) bool {
		return strings.Contains(s, "not available") || strings.Contains(s, "no Kafka source")
	})
	shot("kafka-lag")
	phase("kafka-lag")

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
	req, _ := http.NewRequest("GET", "http://"+st.Master.HTTP+"/", nil)
	req.Header.Set("Accept", "text/html")
	resp, err = http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("the master's / for a browser: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	run("the master's UI", chromedp.Navigate("http://"+st.Master.HTTP+"/ui/?poll=500"))
	b.waitFor("the master's graph", `g.vertex[data-id="out"]`)
	waitText("the master's job", "#job-title", func(s string) bool { return s != "Job" && s != "" })
	waitText("a rate in the master's UI", `g.vertex[data-id="src"] .vertex-rate`, func(s string) bool { return strings.HasSuffix(s, "/s") && !strings.Contains(s, "–") })
	shot("master-graph")
	phase("master-graph")

	// Cancel from its button, with confirmation.
	run("back to the dispatcher", chromedp.Navigate(ui+"#/job/"+id+"/graph"))
	waitText("RUNNING", "#job-state", func(s string) bool { return s == "RUNNING" })
	run("cancel", chromedp.WaitEnabled(chromedp.ID("act-cancel")), chromedp.Click(chromedp.ID("act-cancel")),
		chromedp.WaitVisible(chromedp.ID("modal-ok")), chromedp.Click(chromedp.ID("modal-ok")))
	waitText("CANCELED", "#job-state", func(s string) bool { return s == "CANCELED" })
	if st := dispatcherStatus(t, url, tokenFile, id); st.State != dispatcher.Canceled {
		t.Fatalf("after cancel: %s", st.State)
	}
	shot("job-canceled")
	phase("job-canceled")
	run("jobs list", chromedp.Navigate(ui+"#/jobs"))
	waitText("the job's row", fmt.Sprintf(`tr[data-id="%s"]`, id), func(s string) bool { return strings.Contains(s, "CANCELED") })
}

// uiBrowser is a headless Chromium for a test, with helpers that fail the
// test with the page's text and a log.
type uiBrowser struct {
	t         *testing.T
	ctx, bctx context.Context
	shots     string
	log       func() string
}

func newUIBrowser(t *testing.T, dir, shots string, log func() string) *uiBrowser {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium on PATH (`make chromium` installs Debian's): %v", err)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(dir, "chromium")), chromedp.WindowSize(1360, 900))
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	// The first Do starts the browser, on a context without a deadline (a
	// deadline there would stop the browser with it).
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	t.Cleanup(cancel)
	return &uiBrowser{t: t, ctx: ctx, bctx: bctx, shots: shots, log: log}
}

func (b *uiBrowser) fail(what string, err error) {
	b.t.Helper()
	page, _ := chromedp.Run(b.bctx, chromedp.Text(chromedp.CSS("body")))
	b.t.Fatalf("%s: %v\npage: %s\nlog:\n%s", what, err, tail(page, 2000), tail(b.log(), 3000))
}

func (b *uiBrowser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.fail(what, err)
	}
}

func (b *uiBrowser) text(what string, a chromedp.Action[string]) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.fail(what, err)
	}
	return s
}

func (b *uiBrowser) count(sel string) int {
	b.t.Helper()
	n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
	if err != nil {
		b.fail("count "+sel, err)
	}
	return n
}

// waitFor waits until sel matches an element.
func (b *uiBrowser) waitFor(what, sel string) {
	b.t.Helper()
	b.waitText(what, sel, func(string) bool { return true })
}

// click clicks sel's element in one script (see waitText).
func (b *uiBrowser) click(what, sel string) {
	b.t.Helper()
	b.waitFor(what, sel)
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](fmt.Sprintf("document.querySelector(%q).dispatchEvent(new MouseEvent('click', {bubbles: true}))", sel))); err != nil {
		b.fail(what, err)
	}
}

// shot saves a full-page PNG of the view as name.png.
func (b *uiBrowser) shot(name string) {
	b.t.Helper()
	b.run("settle", chromedp.Sleep(300*time.Millisecond))
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.fail("screenshot "+name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// waitText polls sel's text until ok accepts it. The pages draw their
// views anew on each poll, so the element is found and read in one
// script: a node found by one call may be gone at the next.
func (b *uiBrowser) waitText(what, sel string, ok func(string) bool) string {
	b.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := chromedp.Run(b.ctx, chromedp.Evaluate[*string](fmt.Sprintf("document.querySelector(%q)?.textContent ?? null", sel)))
		if err != nil {
			b.fail(what, err)
		}
		if s != nil && ok(*s) {
			return *s
		}
		var got string
		if s != nil {
			got = *s
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: %q after 90s\nlog:\n%s", what, got, tail(b.log(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// contractViews drives the master's UI against a stand-in master that
// answers as docs/rest-api.md and the session's contracts say,
// /v1/kafka-lag and /v1/progress among them (not every master serves them
// yet): a six-vertex graph with a side output and back-pressure, Kafka lag
// per partition, a failed checkpoint and a savepoint in progress.
func contractViews(t *testing.T, b *uiBrowser) {
	t.Helper()
	srv := httptest.NewServer(fakeMasterAPI(time.Now()))
	defer srv.Close()

	b.run("the stand-in master's UI", chromedp.Navigate(srv.URL+"/ui/?poll=500"))
	b.waitFor("the graph", `g.vertex[data-id="out"]`)
	if nv, ne := b.count("g.vertex"), b.count("path.edge"); nv != 6 || ne != 5 {
		t.Fatalf("graph: %d vertices, %d edges; want 6 and 5", nv, ne)
	}
	// Back-pressure from two polls: agg waits 80 % of the time, enrich 30 %.
	b.waitFor("agg red", `g.vertex.bp-bad[data-id="agg"]`)
	b.waitFor("enrich amber", `g.vertex.bp-warn[data-id="enrich"]`)
	b.waitFor("clicks green", `g.vertex.bp-ok[data-id="clicks"]`)
	b.waitText("the side output's edge", "svg.graph", func(s string) bool { return strings.Contains(s, "forward (late)") })
	b.waitText("the savepoint's progress", "#progress", func(s string) bool {
		return strings.Contains(s, "savepoint sp-7") && strings.Contains(s, "40.0 MiB of 100.0 MiB") && strings.Contains(s, "left")
	})
	b.shot("contract-graph")

	b.run("Kafka lag", chromedp.Click(chromedp.ID("tab-kafka")))
	b.waitText("Kafka lag", "#kafka-list", func(s string) bool { return strings.Contains(s, "clicks") && strings.Contains(s, "users") })
	if n := b.count("#kafka-list tbody tr"); n != 6 {
		t.Fatalf("Kafka lag: %d partitions shown, want 6", n)
	}
	b.shot("contract-kafka-lag")

	b.run("checkpoints", chromedp.Click(chromedp.ID("tab-checkpoints")))
	b.waitText("a failed checkpoint", "#checkpoint-list", func(s string) bool { return strings.Contains(s, "expired after 60000 ms") })
	if n := b.count("svg.chart rect.bar-failed"); n != 2 {
		t.Fatalf("failed checkpoints drawn: %d bars, want 2 (duration and size)", n)
	}
	b.shot("contract-checkpoints")
}

// fakeMasterAPI answers a master's read-only routes for a job that runs
// since start: counts grow with time, so that rates and back-pressure show.
func fakeMasterAPI(start time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", webui.Handler(webui.Master))
	js := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	el := func() float64 { return float64(time.Since(start).Milliseconds()) }
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"job": "clickstream", "state": "running", "attempt": "5e1f0c2a", "since": start.UTC().Format(time.RFC3339Nano),
			"restarts": 1, "checkpoints": 41, "failedCheckpoints": 1, "nodes": []any{}})
	})
	type in = map[string]string
	vertex := func(id, typ string, p int, source bool, inRate, outRate, bp float64, wm float64, inputs ...in) map[string]any {
		t := el()
		v := map[string]any{"id": id, "type": typ, "parallelism": p, "source": source, "state": "running",
			"rowsIn": int64(t * inRate / 1000), "rowsOut": int64(t * outRate / 1000), "backPressuredMs": int64(t * bp * float64(p)),
			"inputs": append([]in{}, inputs...), "subtasks": []any{}}
		for i := range p {
			v["subtasks"] = append(v["subtasks"].([]any), map[string]any{"subtask": i, "taskManager": fmt.Sprintf("tm-%d", i%2+1),
				"rowsIn": int64(t * inRate / 1000 / float64(p)), "rowsOut": int64(t * outRate / 1000 / float64(p)), "backPressuredMs": int64(t * bp)})
		}
		if wm > 0 {
			v["watermarkLagMs"] = wm
		}
		return v
	}
	mux.HandleFunc("GET /v1/vertices", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"job": "clickstream", "vertices": []any{
			vertex("clicks", "kafka", 4, true, 0, 42000, 0.02, 850),
			vertex("users", "kafka", 2, true, 0, 3000, 0, 900),
			vertex("enrich", "union", 4, false, 45000, 44000, 0.3, 1200, in{"from": "clicks", "partition": "hash"}, in{"from": "users", "partition": "hash"}),
			vertex("agg", "window", 4, false, 44000, 900, 0.8, 4200, in{"from": "enrich", "partition": "hash"}),
			vertex("late-sink", "file", 1, false, 120, 0, 0, 0, in{"from": "enrich", "output": "late", "partition": "forward"}),
			vertex("out", "kafka", 2, false, 900, 0, 0, 4300, in{"from": "agg", "partition": "rebalance"}),
		}})
	})
	mux.HandleFunc("GET /v1/checkpoints", func(w http.ResponseWriter, r *http.Request) {
		var hist []any
		for id := 41; id >= 12; id-- {
			ts := start.Add(-time.Duration(42-id) * 10 * time.Second).UTC().Format(time.RFC3339Nano)
			c := map[string]any{"id": id, "triggered": ts, "durationMs": 300 + float64(id%7)*90, "alignmentMs": float64(id%5) * 40,
				"bytes": 40<<20 + id*(1<<20), "state": "completed", "path": fmt.Sprintf("hdfs://nn:8020/sluice/ck/chk-%d", id)}
			switch id {
			case 33:
				c["state"], c["bytes"], c["durationMs"], c["path"] = "failed", 0, 60000.0, ""
				c["error"] = "checkpoint 33 expired after 60000 ms before every task acknowledged (7 of 8)"
			case 38:
				c["savepoint"], c["path"] = true, "hdfs://nn:8020/sluice/savepoints/savepoint-38-9a1c"
			}
			hist = append(hist, c)
		}
		js(w, map[string]any{"completed": 39, "savepoints": 1, "failed": 1, "restarts": 1, "latest": hist[0], "history": hist})
	})
	mux.HandleFunc("GET /v1/taskmanagers", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"mode": "cluster", "registered": 2, "lost": 1, "taskManagers": []any{
			map[string]any{"id": "tm-1", "resourceId": "sluice-tm-clickstream-1", "host": "agent-3", "dataAddress": "10.0.0.3:31002", "slots": 4, "heartbeatRttMs": 0.8, "lastHeard": time.Now().UTC().Format(time.RFC3339Nano), "tasks": []string{"clicks#0", "enrich#0", "agg#0"}},
			map[string]any{"id": "tm-2", "resourceId": "sluice-tm-clickstream-2", "host": "agent-5", "dataAddress": "10.0.0.5:31007", "slots": 4, "heartbeatRttMs": 1.1, "lastHeard": time.Now().UTC().Format(time.RFC3339Nano), "tasks": []string{"clicks#1", "enrich#1", "agg#1"}},
		}})
	})
	mux.HandleFunc("GET /v1/kafka-lag", func(w http.ResponseWriter, r *http.Request) {
		var ps []any
		for i, lag := range []int64{120, 4500, 80, 30} {
			ps = append(ps, map[string]any{"vertex": "clicks", "subtask": i, "cluster": 0, "topic": "clicks", "partition": i, "offset": 1_000_000 + i, "highWatermark": 1_000_000 + int64(i) + lag, "lag": lag})
		}
		for i, lag := range []int64{0, 12} {
			ps = append(ps, map[string]any{"vertex": "users", "subtask": i, "cluster": 0, "topic": "users", "partition": i, "offset": 5000, "highWatermark": 5000 + lag, "lag": lag})
		}
		js(w, map[string]any{"partitions": ps})
	})
	mux.HandleFunc("GET /v1/progress", func(w http.ResponseWriter, r *http.Request) {
		js(w, map[string]any{"operations": []any{
			map[string]any{"id": "sp-7", "kind": "savepoint", "state": "running", "startedAt": time.Now().Add(-3 * time.Second).UTC().Format(time.RFC3339Nano),
				"bytesDone": 40 << 20, "bytesTotal": 100 << 20, "filesDone": 3, "filesTotal": 8, "etaMs": 4500,
				"subtasks": []any{map[string]any{"vertex": "agg", "subtask": 0, "bytesDone": 20 << 20, "bytesTotal": 50 << 20, "filesDone": 2, "filesTotal": 4}}},
		}})
	})
	return mux
}
