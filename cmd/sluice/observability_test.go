package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// obsJob is examples/exactly-once.json running long and slowly enough for
// the API to be asked while it runs (it is cancelled well before its end).
func obsJob(t *testing.T, extra ...string) []string {
	j := newSavepointJob(t)
	j.rows = 2_000_000
	return j.args(t, 20_000, append([]string{"--http", "127.0.0.1:0"}, extra...)...)
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrape GETs a /metrics page and parses its samples.
func scrape(t *testing.T, url string) []sample {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: HTTP %d, %s: %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var out []sample
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s: not a sample line: %q", url, l)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", url, l, err)
		}
		s := sample{name: m[1], labels: map[string]string{}, value: v}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[p[1]] = p[2]
		}
		out = append(out, s)
	}
	return out
}

// find returns the samples named name whose labels include want.
func find(ss []sample, name string, want map[string]string) []sample {
	var out []sample
next:
	for _, s := range ss {
		if s.name != name {
			continue
		}
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// checkLabels fails on a sluice_ metric with a label other than the
// bounded ones, or a vertex or taskmanager value that is not one of the
// job's: labels never carry a key or a value of the data.
func checkLabels(t *testing.T, ss []sample, vertices map[string]bool, tm *regexp.Regexp) {
	t.Helper()
	for _, s := range ss {
		if !strings.HasPrefix(s.name, "sluice_") {
			continue
		}
		for k, v := range s.labels {
			switch k {
			case "job_name":
				if v != "exactly-once" {
					t.Errorf("%s: job_name=%q", s.name, v)
				}
			case "vertex":
				if !vertices[v] {
					t.Errorf("%s: vertex=%q is not a vertex of the job", s.name, v)
				}
			case "taskmanager":
				if !tm.MatchString(v) {
					t.Errorf("%s: taskmanager=%q", s.name, v)
				}
			case "subtask":
				if n, err := strconv.Atoi(v); err != nil || n < 0 || n >= 2 {
					t.Errorf("%s: subtask=%q is not a subtask of the job (parallelism 2)", s.name, v)
				}
			case "le":
				if !strings.HasSuffix(s.name, "_bucket") {
					t.Errorf("%s: le on a sample that is no histogram bucket", s.name)
				}
			default:
				t.Errorf("%s: label %s=%q: only job_name, vertex, subtask, taskmanager are allowed", s.name, k, v)
			}
		}
	}
}

// one returns the value of the single sample name{want}.
func one(t *testing.T, ss []sample, name string, want map[string]string) float64 {
	t.Helper()
	got := find(ss, name, want)
	if len(got) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, want, len(got))
	}
	return got[0].value
}

type checkpointsAPI struct {
	Completed, Failed, Savepoints int64
	Latest                        *checkpointAPI
	History                       []checkpointAPI
}

type checkpointAPI struct {
	ID          int64
	State       string
	Bytes       int64
	DurationMs  float64
	AlignmentMs float64
	Path        string
}

type errorAPI struct{ Error string }

// TestMetricsAndRESTEmbedded runs a job in one process with --http:
// /metrics carries the job's metrics with bounded labels; the REST routes
// answer status, vertices, the checkpoint history and (no) TaskManagers;
// bad requests get JSON errors; POST /v1/cancel ends the job.
func TestMetricsAndRESTEmbedded(t *testing.T) {
	p := startSluice(t, obsJob(t)...)
	api := p.apiURL()

	var cps checkpointsAPI
	p.waitFor("three checkpoints", func() bool {
		return call(t, "GET", api+"/v1/checkpoints", &cps) == 200 && cps.Completed >= 3
	})
	if len(cps.History) < 3 || cps.Latest == nil {
		t.Fatalf("checkpoints: %+v", cps)
	}
	for i, c := range cps.History {
		if c.State != "completed" || c.Bytes <= 0 || c.DurationMs <= 0 || !strings.Contains(c.Path, "chk-") {
			t.Errorf("history[%d] = %+v", i, c)
		}
		if i > 0 && c.ID >= cps.History[i-1].ID {
			t.Errorf("history not newest first: %d after %d", c.ID, cps.History[i-1].ID)
		}
	}
	var lim checkpointsAPI
	if code := call(t, "GET", api+"/v1/checkpoints?limit=1", &lim); code != 200 || len(lim.History) != 1 {
		t.Errorf("limit=1: HTTP %d, %d entries", code, len(lim.History))
	}
	var e errorAPI
	if code := call(t, "GET", api+"/v1/checkpoints?limit=0", &e); code != 400 || !strings.Contains(e.Error, "limit") {
		t.Errorf("limit=0: HTTP %d %+v, want 400 naming limit", code, e)
	}
	if code := call(t, "POST", api+"/v1/checkpoints", &e); code != 405 || e.Error == "" {
		t.Errorf("POST /v1/checkpoints: HTTP %d %+v, want 405", code, e)
	}
	if code := call(t, "GET", api+"/v1/nothing", &e); code != 404 || !strings.Contains(e.Error, "/v1/checkpoints") {
		t.Errorf("GET /v1/nothing: HTTP %d %+v, want 404 listing the routes", code, e)
	}

	var vs struct {
		Job      string
		Vertices []struct {
			ID          string
			Parallelism int
			State       string
			RowsOut     int64
			Subtasks    []struct {
				TaskManager string
				RowsOut     int64
			}
		}
	}
	if code := call(t, "GET", api+"/v1/vertices", &vs); code != 200 || vs.Job != "exactly-once" || len(vs.Vertices) != 3 {
		t.Fatalf("vertices: HTTP %d %+v", code, vs)
	}
	vertices := map[string]bool{}
	for _, v := range vs.Vertices {
		vertices[v.ID] = true
		if v.Parallelism != 2 || v.State != "running" || len(v.Subtasks) != 2 || v.Subtasks[0].TaskManager != "" {
			t.Errorf("vertex %+v: want parallelism 2, running, two subtasks with no placement (one process)", v)
		}
		if v.ID == "src" && (v.Subtasks[0].RowsOut <= 0 || v.Subtasks[1].RowsOut <= 0) {
			t.Errorf("source %+v: want rows out per subtask", v)
		}
	}
	var tms struct {
		Mode         string
		TaskManagers []struct{}
	}
	if code := call(t, "GET", api+"/v1/taskmanagers", &tms); code != 200 || tms.Mode != "embedded" || len(tms.TaskManagers) != 0 {
		t.Errorf("taskmanagers: HTTP %d %+v, want embedded and none", code, tms)
	}

	ss := scrape(t, api+"/metrics")
	checkLabels(t, ss, vertices, regexp.MustCompile(`^$`))
	job := map[string]string{"job_name": "exactly-once"}
	if n := one(t, ss, "sluice_checkpoints_completed_total", job); n < 3 {
		t.Errorf("sluice_checkpoints_completed_total = %v, want ≥ 3", n)
	}
	if n := one(t, ss, "sluice_checkpoint_duration_seconds_count", job); n < 3 {
		t.Errorf("sluice_checkpoint_duration_seconds_count = %v", n)
	}
	if n := one(t, ss, "sluice_checkpoint_last_size_bytes", job); n <= 0 {
		t.Errorf("sluice_checkpoint_last_size_bytes = %v", n)
	}
	if n := one(t, ss, "sluice_vertex_rows_out_total", map[string]string{"vertex": "src"}); n <= 0 {
		t.Errorf("src rows out = %v", n)
	}
	for _, name := range []string{"sluice_checkpoint_last_completed_age_seconds", "sluice_checkpoints_failed_total",
		"sluice_job_restarts_total", "sluice_savepoints_completed_total", "sluice_checkpoint_last_duration_seconds"} {
		one(t, ss, name, job)
	}
	for v := range vertices {
		one(t, ss, "sluice_vertex_rows_in_total", map[string]string{"vertex": v})
		one(t, ss, "sluice_vertex_parallelism", map[string]string{"vertex": v})
		one(t, ss, "sluice_vertex_back_pressured_seconds_total", map[string]string{"vertex": v})
	}
	if len(find(ss, "sluice_taskmanagers_registered", nil)) != 0 {
		t.Error("a job in one process reports TaskManagers")
	}
	if len(find(ss, "go_goroutines", nil)) != 1 || len(find(ss, "process_resident_memory_bytes", nil)) != 1 {
		t.Error("no Go or process metrics")
	}

	var c struct{ Cancelled bool }
	if code := call(t, "POST", api+"/v1/cancel?savepoint=maybe", &e); code != 400 {
		t.Errorf("cancel?savepoint=maybe: HTTP %d, want 400", code)
	}
	if code := call(t, "POST", api+"/v1/cancel", &c); code != 200 || !c.Cancelled {
		t.Fatalf("cancel: HTTP %d %+v", code, c)
	}
	if code := p.wait(); code != 130 || !strings.Contains(p.stderr.String(), "cancelling the job on request") {
		t.Fatalf("after cancel: exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

var tmMetricsLine = regexp.MustCompile(`"metrics listening" .*addr=(\S+)`)

// TestMetricsAndRESTCluster runs the job on two TaskManager processes
// (sluice run --cluster 2 --http, the TaskManagers with --metrics through
// SLUICE_METRICS): the master reports its TaskManagers with their slots,
// RTT and tasks, /metrics on the master and on a TaskManager carry the
// cluster's metrics with bounded labels, and cancel with a savepoint
// answers the savepoint's path and stops the job.
func TestMetricsAndRESTCluster(t *testing.T) {
	t.Setenv("SLUICE_METRICS", "127.0.0.1:0") // inherited by the TaskManagers
	p := startSluice(t, obsJob(t, "--cluster", "2")...)
	api := p.apiURL()

	type tmAPI struct {
		ID, ResourceID, Host, DataAddress string
		Slots                             int
		HeartbeatRttMs                    float64
		Tasks                             []string
	}
	var tms struct {
		Mode             string
		Registered, Lost int
		TaskManagers     []tmAPI
	}
	p.waitFor("two busy TaskManagers with a heartbeat round trip", func() bool {
		if call(t, "GET", api+"/v1/taskmanagers", &tms) != 200 || len(tms.TaskManagers) != 2 {
			return false
		}
		for _, tm := range tms.TaskManagers {
			if len(tm.Tasks) == 0 || tm.HeartbeatRttMs <= 0 {
				return false
			}
		}
		return true
	})
	tasks := 0
	for _, tm := range tms.TaskManagers {
		if tm.Slots != 1 || tm.DataAddress == "" || tm.Host == "" || !strings.HasPrefix(tm.ResourceID, "local-") {
			t.Errorf("TaskManager %+v", tm)
		}
		tasks += len(tm.Tasks)
	}
	if tms.Mode != "cluster" || tms.Registered != 2 || tasks != 6 { // 3 vertices × parallelism 2
		t.Errorf("taskmanagers: %+v; want cluster, 2 registered, 6 subtasks placed", tms)
	}
	var vs struct {
		Vertices []struct {
			ID       string
			State    string
			Subtasks []struct {
				Subtask     int
				TaskManager string
			}
		}
	}
	if code := call(t, "GET", api+"/v1/vertices", &vs); code != 200 || len(vs.Vertices) != 3 {
		t.Fatalf("vertices: HTTP %d %+v", code, vs)
	}
	vertices := map[string]bool{}
	for _, v := range vs.Vertices {
		vertices[v.ID] = true
		if v.State != "running" || len(v.Subtasks) != 2 || v.Subtasks[0].TaskManager == "" || v.Subtasks[1].TaskManager == "" {
			t.Errorf("vertex %+v: want running, both subtasks placed", v)
		}
	}
	var cps checkpointsAPI
	// The window's subtasks take two channels each (a hash edge across
	// TaskManagers): their acknowledgements carry a measured alignment.
	p.waitFor("a checkpoint with its alignment", func() bool {
		return call(t, "GET", api+"/v1/checkpoints", &cps) == 200 && cps.Latest != nil && cps.Latest.AlignmentMs > 0
	})

	tmName := regexp.MustCompile(`^local-\d+$`)
	ss := scrape(t, api+"/metrics")
	checkLabels(t, ss, vertices, tmName)
	if n := one(t, ss, "sluice_taskmanagers_registered", nil); n != 2 {
		t.Errorf("sluice_taskmanagers_registered = %v", n)
	}
	one(t, ss, "sluice_taskmanagers_lost_total", nil)
	one(t, ss, "sluice_checkpoint_last_alignment_seconds", nil)
	// Half the rows cross the hash edge between the two TaskManagers.
	p.waitFor("bytes across processes", func() bool {
		ss := scrape(t, api+"/metrics")
		var out, in float64
		for _, s := range ss {
			switch {
			case s.name == "sluice_vertex_bytes_out_total" && s.labels["vertex"] == "src":
				out = s.value
			case s.name == "sluice_vertex_bytes_in_total" && s.labels["vertex"] == "win":
				in = s.value
			}
		}
		return out > 0 && in > 0
	})
	// The window's event time, reported by the TaskManagers (each second).
	p.waitFor("the window's watermark lag", func() bool {
		for _, s := range scrape(t, api+"/metrics") {
			if s.name == "sluice_vertex_watermark_lag_seconds" && s.labels["vertex"] == "win" && s.value > 0 {
				return true
			}
		}
		return false
	})
	for v := range vertices {
		one(t, ss, "sluice_vertex_back_pressured_seconds_total", map[string]string{"vertex": v})
	}
	// Per subtask, from the TaskManagers' reports: the window's two
	// subtasks each took rows in, and they add up to the vertex's rows
	// (one scrape reads one set of reports).
	p.waitFor("rows per subtask", func() bool {
		var total, sum float64
		per := 0
		for _, s := range scrape(t, api+"/metrics") {
			switch {
			case s.name == "sluice_vertex_rows_in_total" && s.labels["vertex"] == "win":
				total = s.value
			case s.name == "sluice_subtask_rows_in_total" && s.labels["vertex"] == "win" && s.value > 0:
				sum += s.value
				per++
			}
		}
		return per == 2 && sum == total
	})
	for _, tm := range tms.TaskManagers {
		one(t, ss, "sluice_taskmanager_slots", map[string]string{"taskmanager": tm.ResourceID})
		one(t, ss, "sluice_taskmanager_heartbeat_rtt_seconds", map[string]string{"taskmanager": tm.ResourceID})
	}
	p.waitFor("rows counted at the master", func() bool {
		return one(t, scrape(t, api+"/metrics"), "sluice_vertex_rows_out_total", map[string]string{"vertex": "src"}) > 0
	})

	var tmURLs []string
	p.waitFor("both TaskManagers' metrics servers", func() bool {
		tmURLs = nil
		for _, m := range tmMetricsLine.FindAllStringSubmatch(p.stderr.String(), -1) {
			tmURLs = append(tmURLs, m[1])
		}
		return len(tmURLs) >= 2
	})
	for _, u := range tmURLs[:2] {
		var tss []sample
		p.waitFor("rows counted on a TaskManager", func() bool {
			tss = scrape(t, u)
			s := find(tss, "sluice_taskmanager_vertex_rows_out_total", map[string]string{"vertex": "src"})
			return len(s) == 1 && s[0].value > 0
		})
		checkLabels(t, tss, vertices, tmName)
		for v := range vertices {
			one(t, tss, "sluice_taskmanager_vertex_rows_in_total", map[string]string{"vertex": v})
			one(t, tss, "sluice_taskmanager_vertex_back_pressured_seconds_total", map[string]string{"vertex": v})
		}
		for _, name := range []string{"sluice_taskmanager_attempts_running", "sluice_taskmanager_slots", "sluice_taskmanager_master_epoch"} {
			if v := find(tss, name, nil); len(v) != 1 || v[0].value != 1 {
				t.Errorf("%s at %s: %+v, want one sample of 1", name, u, v)
			}
		}
	}

	var c struct {
		Cancelled bool
		Path      string
	}
	if code := call(t, "POST", api+"/v1/cancel?savepoint=true", &c); code != 200 || !c.Cancelled || c.Path == "" {
		t.Fatalf("cancel?savepoint=true: HTTP %d %+v", code, c)
	}
	if _, err := os.Stat(strings.TrimPrefix(c.Path, "file://")); err != nil {
		t.Errorf("the savepoint the cancel answered: %v", err)
	}
	done := time.Now()
	if code := p.wait(); code != 0 || !strings.Contains(p.stderr.String(), "stopped with a savepoint") {
		t.Fatalf("after cancel with a savepoint: exit %d (%v after the answer); stderr:\n%s", code, time.Since(done), p.stderr.String())
	}
}
