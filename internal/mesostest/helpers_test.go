package mesostest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const waitLimit = 20 * time.Second

func startMaster(t *testing.T, cfg Config) *Master {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.AllocationInterval == 0 {
		cfg.AllocationInterval = 50 * time.Millisecond
	}
	m, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// post sends a JSON body and returns status, headers and body.
func post(t *testing.T, url string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

type evt map[string]any

// get walks a dotted path through decoded JSON ("update.status.state").
func (e evt) get(path string) any {
	var cur any = map[string]any(e)
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func (e evt) str(path string) string {
	s, _ := e.get(path).(string)
	return s
}

type sub struct {
	t        *testing.T
	m        *Master
	resp     *http.Response
	streamID string
	fwID     string
	events   chan evt
	raw      chan string
	stash    []evt             // OFFERS skipped while waiting for updates
	raws     map[string]string // the raw record of each event returned, by its "type" and state
	done     chan struct{}
}

// subscribe posts a SUBSCRIBE and reads records in the background.
func subscribe(t *testing.T, m *Master, body string) *sub {
	t.Helper()
	return subscribeWith(t, m, nil, body)
}

func subscribeWith(t *testing.T, m *Master, hdr map[string]string, body string) *sub {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, m.URL()+"/api/v1/scheduler", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("subscribe: %d %s", resp.StatusCode, b)
	}
	s := &sub{t: t, m: m, resp: resp, streamID: resp.Header.Get("Mesos-Stream-Id"), events: make(chan evt, 1000), raw: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.events)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			n, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil {
				return
			}
			rec := make([]byte, n)
			if _, err := io.ReadFull(br, rec); err != nil {
				return
			}
			var e evt
			if err := json.Unmarshal(rec, &e); err != nil {
				return
			}
			s.raw <- string(rec)
			s.events <- e
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sub) close() { s.resp.Body.Close() }

// next returns the next event that is not a HEARTBEAT.
func (s *sub) next() evt {
	s.t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.t.Fatal("stream ended")
			}
			raw := <-s.raw
			if e.str("type") == "HEARTBEAT" {
				continue
			}
			if s.raws == nil {
				s.raws = map[string]string{}
			}
			s.raws[shapeKey(e)] = raw
			return e
		case <-timeout:
			s.t.Fatal("no event")
		}
	}
}

// nextType skips events until one of the given type arrives.
func (s *sub) nextType(typ string) evt {
	s.t.Helper()
	for {
		e := s.next()
		if e.str("type") == typ {
			return e
		}
	}
}

// nextUpdate skips OFFERS and RESCINDs until an UPDATE.
func (s *sub) nextUpdate() evt {
	s.t.Helper()
	for {
		e := s.next()
		switch e.str("type") {
		case "OFFERS":
			s.stash = append(s.stash, e)
			continue
		case "RESCIND":
			continue
		}
		return e
	}
}

// quiet reports whether no event but HEARTBEAT and OFFERS/RESCIND of other
// kinds arrives for d; it returns the first unexpected event.
func (s *sub) noEventOf(typ string, d time.Duration) evt {
	s.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return nil
			}
			<-s.raw
			if e.str("type") == typ {
				return e
			}
		case <-timeout:
			return nil
		}
	}
}

// ended waits for the end of the stream and returns events seen before it.
func (s *sub) ended() []evt {
	s.t.Helper()
	var seen []evt
	timeout := time.After(waitLimit)
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				return seen
			}
			<-s.raw
			if e.str("type") != "HEARTBEAT" {
				seen = append(seen, e)
			}
		case <-timeout:
			s.t.Fatal("stream did not end")
		}
	}
}

func (s *sub) subscribed() {
	s.t.Helper()
	e := s.next()
	if e.str("type") != "SUBSCRIBED" {
		s.t.Fatalf("first event %v", e)
	}
	s.fwID = e.str("subscribed.framework_id.value")
}

// call posts a non-SUBSCRIBE call on this stream.
func (s *sub) call(body string) (int, string) {
	s.t.Helper()
	code, _, b := post(s.t, s.m.URL()+"/api/v1/scheduler", map[string]string{"Mesos-Stream-Id": s.streamID}, body)
	return code, b
}

func (s *sub) mustCall(format string, args ...any) {
	s.t.Helper()
	body := fmt.Sprintf(format, args...)
	if code, b := s.call(body); code != http.StatusAccepted {
		s.t.Fatalf("call %s: %d %s", body, code, b)
	}
}

func (s *sub) offer() evt {
	s.t.Helper()
	if len(s.stash) > 0 {
		e := s.stash[0]
		s.stash = s.stash[1:]
		return e
	}
	return s.nextType("OFFERS")
}

func firstOffer(e evt) (offerID, agentID string) {
	offers := e.get("offers.offers").([]any)
	o := evt(offers[0].(map[string]any))
	return o.str("id.value"), o.str("agent_id.value")
}

func (s *sub) ack(u evt) {
	s.t.Helper()
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACKNOWLEDGE","acknowledge":{"agent_id":{"value":%q},"task_id":{"value":%q},"uuid":%q}}`,
		s.fwID, u.str("update.status.agent_id.value"), u.str("update.status.task_id.value"), u.str("update.status.uuid"))
}

// launch accepts offerID with one command task.
func (s *sub) launch(offerID, agentID, taskID, cmd, resources string) {
	s.t.Helper()
	s.launchRefuse(offerID, agentID, taskID, cmd, resources, 1)
}

// launchRefuse is launch with the ACCEPT's refuse_seconds for the rest of the offer.
func (s *sub) launchRefuse(offerID, agentID, taskID, cmd, resources string, refuse float64) {
	s.t.Helper()
	if resources == "" {
		resources = `{"name":"cpus","type":"SCALAR","scalar":{"value":0.1}},{"name":"mem","type":"SCALAR","scalar":{"value":32}}`
	}
	s.mustCall(`{"framework_id":{"value":%q},"type":"ACCEPT","accept":{"offer_ids":[{"value":%q}],"operations":[{"type":"LAUNCH","launch":{"task_infos":[{"name":"t","task_id":{"value":%q},"agent_id":{"value":%q},"resources":[%s],"command":{"shell":true,"value":%q}}]}}],"filters":{"refuse_seconds":%g}}}`,
		s.fwID, offerID, taskID, agentID, resources, cmd, refuse)
}

// expectState reads the next UPDATE, checks its state and acks it when it has a uuid.
func (s *sub) expectState(taskID, state string) evt {
	s.t.Helper()
	u := s.nextUpdate()
	if u.str("type") != "UPDATE" || u.str("update.status.task_id.value") != taskID || u.str("update.status.state") != state {
		s.t.Fatalf("want %s %s, got %v", taskID, state, u)
	}
	if u.str("update.status.uuid") != "" {
		s.ack(u)
	}
	return u
}

// runTask launches a task on the next offer and waits for TASK_RUNNING.
func (s *sub) runTask(taskID, cmd string) (agentID string) {
	s.t.Helper()
	return s.runTaskRefuse(taskID, cmd, 1)
}

// runTaskRefuse is runTask with the ACCEPT's refuse_seconds: a long one lets
// other frameworks have the rest of the agent.
func (s *sub) runTaskRefuse(taskID, cmd string, refuse float64) (agentID string) {
	s.t.Helper()
	oid, aid := firstOffer(s.offer())
	s.launchRefuse(oid, aid, taskID, cmd, "", refuse)
	s.expectState(taskID, "TASK_STARTING")
	s.expectState(taskID, "TASK_RUNNING")
	return aid
}

func subscribeBody(name string, caps ...string) string {
	var c []string
	for _, x := range caps {
		c = append(c, fmt.Sprintf(`{"type":%q}`, x))
	}
	return fmt.Sprintf(`{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"root","name":%q,"roles":["sluice-job1"],"capabilities":[%s],"failover_timeout":60,"checkpoint":true}}}`,
		name, strings.Join(c, ","))
}

var paBody = subscribeBody("sluice-probe", "MULTI_ROLE", "PARTITION_AWARE")

func operator(t *testing.T, m *Master, body string) (int, http.Header, string) {
	t.Helper()
	return post(t, m.URL()+"/api/v1", nil, body)
}

func compact(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		panic(err)
	}
	return b.String()
}

func shapeKey(e evt) string {
	k := e.str("type")
	if st := e.str("update.status.state"); st != "" {
		k += " " + st
		if r := e.str("update.status.reason"); r != "" {
			k += " " + r
		}
	}
	return k
}

var valueRE = regexp.MustCompile(`:("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)`)

// shape blanks the values of a JSON record, keeping keys and their order.
func shape(rec string) string { return valueRE.ReplaceAllString(rec, ":_") }
