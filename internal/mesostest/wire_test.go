package mesostest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// Records from 01-subscribe.txt, with the IDs and the master's port to be replaced.
const (
	transcriptMasterID   = "cdf4d979-07ba-4209-b701-19ec72955ed5"
	transcriptSubscribed = `{"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"cdf4d979-07ba-4209-b701-19ec72955ed5-0000"},"heartbeat_interval_seconds":15.0,"master_info":{"id":"cdf4d979-07ba-4209-b701-19ec72955ed5","ip":16777343,"port":5050,"pid":"master@127.0.0.1:5050","hostname":"127.0.0.1","version":"1.12.0","address":{"hostname":"127.0.0.1","ip":"127.0.0.1","port":5050},"capabilities":[{"type":"AGENT_UPDATE"},{"type":"AGENT_DRAINING"},{"type":"QUOTA_V2"}]}}}`
	transcriptOffers     = `{"type":"OFFERS","offers":{"offers":[{"id":{"value":"cdf4d979-07ba-4209-b701-19ec72955ed5-O0"},"framework_id":{"value":"cdf4d979-07ba-4209-b701-19ec72955ed5-0000"},"agent_id":{"value":"cdf4d979-07ba-4209-b701-19ec72955ed5-S0"},"hostname":"127.0.0.1","url":{"scheme":"http","address":{"hostname":"127.0.0.1","ip":"127.0.0.1","port":5051},"path":"/slave(1)"},"resources":[{"name":"ports","type":"RANGES","ranges":{"range":[{"begin":31000,"end":32000}]},"role":"*","allocation_info":{"role":"sluice-job1"}},{"name":"cpus","type":"SCALAR","scalar":{"value":2.0},"role":"*","allocation_info":{"role":"sluice-job1"}},{"name":"mem","type":"SCALAR","scalar":{"value":2048.0},"role":"*","allocation_info":{"role":"sluice-job1"}},{"name":"disk","type":"SCALAR","scalar":{"value":4096.0},"role":"*","allocation_info":{"role":"sluice-job1"}}],"allocation_info":{"role":"sluice-job1"}}]}}`
)

// rawExchange writes a request on a raw connection and returns a reader of the response.
func rawExchange(t *testing.T, m *Master, req string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func readHeaders(t *testing.T, br *bufio.Reader) (status string, names []string, hdr http.Header) {
	t.Helper()
	hdr = http.Header{}
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	status = strings.TrimSpace(line)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return
		}
		k, v, _ := strings.Cut(line, ": ")
		names = append(names, k)
		hdr.Add(k, v)
	}
}

// readChunk reads one HTTP chunk, returning its payload.
func readChunk(t *testing.T, br *bufio.Reader) []byte {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
	if err != nil {
		t.Fatalf("chunk size %q: %v", line, err)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatal(err)
	}
	if string(b[n:]) != "\r\n" {
		t.Fatalf("chunk not terminated by CRLF: %q", b[n:])
	}
	return b[:n]
}

// splitRecord checks that a chunk holds exactly one RecordIO record.
func splitRecord(t *testing.T, chunk []byte) []byte {
	t.Helper()
	i := bytes.IndexByte(chunk, '\n')
	n, err := strconv.Atoi(string(chunk[:i]))
	if err != nil || i < 0 {
		t.Fatalf("bad record prefix in %q", chunk)
	}
	if len(chunk[i+1:]) != n {
		t.Fatalf("chunk holds %d bytes after a %d-byte prefix: not one record per chunk", len(chunk[i+1:]), n)
	}
	return chunk[i+1:]
}

func httpRequest(path string, headers []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", path)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// 01-subscribe.txt: status, header order, one record per chunk, the
// SUBSCRIBED, HEARTBEAT and OFFERS records byte for byte.
func TestSubscribeWireFormat(t *testing.T) {
	m := startMaster(t, Config{})
	_, br := rawExchange(t, m, httpRequest("/api/v1/scheduler",
		[]string{"Content-Type: application/json", "Accept: application/json"}, paBody))
	status, names, hdr := readHeaders(t, br)
	if status != "HTTP/1.1 200 OK" {
		t.Fatalf("status %q", status)
	}
	if got, want := strings.Join(names, ","), "Date,Transfer-Encoding,Mesos-Stream-Id,Content-Type"; got != want {
		t.Fatalf("header order %s, want %s", got, want)
	}
	if hdr.Get("Transfer-Encoding") != "chunked" || hdr.Get("Content-Type") != "application/json" || len(hdr.Get("Mesos-Stream-Id")) != 36 {
		t.Fatalf("headers %v", hdr)
	}
	port := strconv.Itoa(m.addr.Port)
	wantSub := strings.ReplaceAll(strings.ReplaceAll(transcriptSubscribed, "5050", port), transcriptMasterID, m.ID())
	if got := string(splitRecord(t, readChunk(t, br))); got != wantSub {
		t.Fatalf("SUBSCRIBED\n got %s\nwant %s", got, wantSub)
	}
	// The HEARTBEAT and the first OFFERS come in either order (both were seen).
	wantOffers := strings.ReplaceAll(transcriptOffers, transcriptMasterID, m.ID())
	var sawHeartbeat, sawOffers bool
	for !sawHeartbeat || !sawOffers {
		chunk := readChunk(t, br)
		switch rec := string(splitRecord(t, chunk)); {
		case rec == `{"type":"HEARTBEAT"}`:
			if string(chunk) != "20\n{\"type\":\"HEARTBEAT\"}" {
				t.Fatalf("heartbeat chunk %q", chunk)
			}
			sawHeartbeat = true
		case strings.Contains(rec, `"OFFERS"`):
			if rec != wantOffers {
				t.Fatalf("OFFERS\n got %s\nwant %s", rec, wantOffers)
			}
			sawOffers = true
		default:
			t.Fatalf("unexpected record %s", rec)
		}
	}
}

// 10-protobuf-subscribe.txt: the same framing with protobuf payloads; the
// HEARTBEAT is the two bytes 08 08; errors stay text/plain.
func TestProtobufSubscribe(t *testing.T) {
	m := startMaster(t, Config{})
	body, _ := hex.DecodeString("10011a390a370a04726f6f74120f736c756963652d70726f62652d7062210000000000004e40" +
		"28015202080652020805620b736c756963652d6a6f6231")
	if len(body) != 61 {
		t.Fatalf("request body %d bytes", len(body))
	}
	_, br := rawExchange(t, m, httpRequest("/api/v1/scheduler",
		[]string{"Content-Type: application/x-protobuf", "Accept: application/x-protobuf"}, string(body)))
	status, names, hdr := readHeaders(t, br)
	if status != "HTTP/1.1 200 OK" || strings.Join(names, ",") != "Date,Transfer-Encoding,Mesos-Stream-Id,Content-Type" ||
		hdr.Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("%s %v %v", status, names, hdr)
	}
	var ev scheduler.Event
	if err := proto.Unmarshal(splitRecord(t, readChunk(t, br)), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != scheduler.Event_SUBSCRIBED || ev.Subscribed.GetHeartbeatIntervalSeconds() != 15 {
		t.Fatalf("first record %v", ev)
	}
	caps := ev.Subscribed.MasterInfo.Capabilities
	if len(caps) != 3 || caps[2].Type != mesos.MasterInfo_Capability_Type(quotaV2) {
		t.Fatalf("capabilities %v", caps)
	}
	fid := ev.Subscribed.FrameworkID.Value
	sawHeartbeat := false
	for i := 0; i < 2; i++ {
		chunk := readChunk(t, br)
		if string(chunk) == "2\n\x08\x08" {
			sawHeartbeat = true
		}
	}
	if !sawHeartbeat {
		t.Fatal("no 2-byte HEARTBEAT record")
	}
	revive, _ := proto.Marshal(&scheduler.Call{FrameworkID: &mesos.FrameworkID{Value: fid}, Type: scheduler.Call_REVIVE})
	req, _ := http.NewRequest(http.MethodPost, m.URL()+"/api/v1/scheduler", bytes.NewReader(revive))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Accept", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" ||
		string(b) != "All non-subscribe calls should include the 'Mesos-Stream-Id' header" {
		t.Fatalf("%d %v %q", resp.StatusCode, resp.Header, b)
	}
	req, _ = http.NewRequest(http.MethodPost, m.URL()+"/api/v1/scheduler", bytes.NewReader(revive))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Accept", "application/x-protobuf")
	req.Header.Set("Mesos-Stream-Id", hdr.Get("Mesos-Stream-Id"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("Content-Length") != "0" || resp.Header.Get("Content-Type") != "" {
		t.Fatalf("REVIVE: %d %v", resp.StatusCode, resp.Header)
	}
}

// README item 2 and 5: HEARTBEATs keep coming; a stream the master ends
// closes with the zero-length chunk and the connection stays open for the
// next request.
func TestHeartbeatsAndKeepAlive(t *testing.T) {
	m := startMaster(t, Config{HeartbeatInterval: 50 * time.Millisecond})
	s := subscribe(t, m, paBody)
	beats := 0
	for beats < 3 {
		select {
		case e := <-s.events:
			<-s.raw
			if e.str("type") == "HEARTBEAT" {
				beats++
			}
		case <-time.After(waitLimit):
			t.Fatal("no heartbeats")
		}
	}
	fid := ""
	for _, f := range m.Frameworks() {
		fid = f.ID
	}
	if err := m.Teardown(fid); err != nil {
		t.Fatal(err)
	}
	c, br := rawExchange(t, m, httpRequest("/api/v1/scheduler",
		[]string{"Content-Type: application/json", "Accept: application/json"}, resubscribeBody(fid, 60)))
	status, _, hdr := readHeaders(t, br)
	if status != "HTTP/1.1 200 OK" || hdr.Get("Mesos-Stream-Id") == "" {
		t.Fatalf("%s %v", status, hdr)
	}
	if rec := string(splitRecord(t, readChunk(t, br))); rec != `{"type":"ERROR","error":{"message":"Framework has been removed"}}` {
		t.Fatalf("%s", rec)
	}
	if last := readChunk(t, br); len(last) != 0 {
		t.Fatalf("want the zero-length chunk, got %q", last)
	}
	// Same connection, next request.
	io.WriteString(c, httpRequest("/api/v1", []string{"Content-Type: application/json", "Accept: application/json"}, `{"type":"GET_HEALTH"}`))
	status, _, _ = readHeaders(t, br)
	if status != "HTTP/1.1 200 OK" {
		t.Fatalf("second request on the connection: %q", status)
	}
}
