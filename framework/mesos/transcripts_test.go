package mesos

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/recordio"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"
	"google.golang.org/protobuf/encoding/protowire"
)

// The transcripts recorded from a real Mesos 1.12 master (next to the
// worktrees; SLUICE_MESOS_TRANSCRIPTS overrides).
func transcript(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("SLUICE_MESOS_TRANSCRIPTS")
	if dir == "" {
		dir = "../../../shared/mesos-transcripts"
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("the recorded transcripts: %v", err)
	}
	return string(b)
}

// record finds the first JSON record of a transcript whose line starts
// with prefix.
func record(t *testing.T, text, prefix string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return sc.Text()
		}
	}
	t.Fatalf("no record starting %q", prefix)
	return ""
}

// hexDump reads the hex dump that follows marker (lines "offset: hh hh …").
func hexDump(t *testing.T, text, marker string) []byte {
	t.Helper()
	i := strings.Index(text, marker)
	if i < 0 {
		t.Fatalf("no %q", marker)
	}
	var out []byte
	for _, line := range strings.Split(text[i:], "\n")[1:] {
		colon := strings.Index(line, ": ")
		if colon != 8 {
			break
		}
		hexPart := line[colon+2:]
		if len(hexPart) > 48 {
			hexPart = hexPart[:48]
		}
		b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(hexPart), " ", ""))
		if err != nil {
			t.Fatalf("hex dump line %q: %v", line, err)
		}
		out = append(out, b...)
	}
	return out
}

// Fact: mesos-go's JSON decoding rejects the SUBSCRIBED of a 1.12 master
// (QUOTA_V2 is newer than the library) — the reason the client speaks
// protobuf.
func TestTranscriptJSONSubscribedFailsInMesosGo(t *testing.T) {
	rec := record(t, transcript(t, "11-redirect.txt"), `{"type":"SUBSCRIBED"`)
	if !strings.Contains(rec, "QUOTA_V2") {
		t.Fatal("the recorded SUBSCRIBED has no QUOTA_V2")
	}
	var e scheduler.Event
	if err := json.Unmarshal([]byte(rec), &e); err == nil {
		t.Fatal("mesos-go decoded the JSON SUBSCRIBED with QUOTA_V2: the protobuf codec would not be needed")
	}
}

// The protobuf SUBSCRIBED of 10-protobuf-subscribe.txt, rebuilt field by
// field from its decoded text (the transcript dumps only its first 64
// bytes): the bytes agree with the dump and the length prefix, and the
// client's stream decodes it, QUOTA_V2 (enum 3, unknown to mesos-go)
// included.
func TestTranscriptProtobufSubscribed(t *testing.T) {
	text := transcript(t, "10-protobuf-subscribe.txt")
	dump := hexDump(t, text, "## Hex dump of the first 64 bytes of the response body")
	str := func(b []byte, num protowire.Number, s string) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	msg := func(b []byte, num protowire.Number, m []byte) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendBytes(b, m)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	var addr []byte
	addr = str(addr, 1, "127.0.0.1")
	addr = str(addr, 2, "127.0.0.1")
	addr = varint(addr, 3, 5050)
	var mi []byte
	mi = str(mi, 1, "b2028c62-be0f-4851-b4b3-f3f9459b7497")
	mi = varint(mi, 2, 16777343)
	mi = varint(mi, 3, 5050)
	mi = str(mi, 4, "master@127.0.0.1:5050")
	mi = str(mi, 5, "127.0.0.1")
	mi = str(mi, 6, "1.12.0")
	mi = msg(mi, 7, addr)
	for _, capType := range []uint64{1, 2, 3} { // AGENT_UPDATE, AGENT_DRAINING, QUOTA_V2
		mi = msg(mi, 9, varint(nil, 1, capType))
	}
	var sub []byte
	sub = msg(sub, 1, str(nil, 1, "b2028c62-be0f-4851-b4b3-f3f9459b7497-0000"))
	sub = protowire.AppendTag(sub, 2, protowire.Fixed64Type)
	sub = protowire.AppendFixed64(sub, 0x402e000000000000) // 15.0
	sub = msg(sub, 3, mi)
	var ev []byte
	ev = varint(ev, 1, 1) // SUBSCRIBED
	ev = msg(ev, 2, sub)
	body := append([]byte("188\n"), ev...)
	if len(ev) != 188 || !bytes.Equal(body[:len(dump)], dump) {
		t.Fatalf("rebuilt record (%d bytes) does not match the dump:\n%x\n%x", len(ev), body[:64], dump)
	}
	// The whole stream as recorded: SUBSCRIBED, then the 2-byte HEARTBEAT.
	body = append(body, "2\n\x08\x08"...)
	s := &Stream{body: io.NopCloser(nil), r: recordio.NewReader(bytes.NewReader(body))}
	e, err := s.Next()
	if err != nil {
		t.Fatalf("decoding the recorded SUBSCRIBED: %v", err)
	}
	if e.Type != scheduler.Event_SUBSCRIBED || e.Subscribed.GetFrameworkID().GetValue() != "b2028c62-be0f-4851-b4b3-f3f9459b7497-0000" ||
		e.Subscribed.GetHeartbeatIntervalSeconds() != 15 {
		t.Fatalf("decoded %v", e)
	}
	caps := e.Subscribed.MasterInfo.Capabilities
	if len(caps) != 3 || int32(caps[2].Type) != 3 {
		t.Fatalf("capabilities %v", caps)
	}
	if e, err = s.Next(); err != nil || e.Type != scheduler.Event_HEARTBEAT {
		t.Fatalf("the 2-byte HEARTBEAT: %v %v", e, err)
	}
	if _, err = s.Next(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
}

// The protobuf calls the client sends are the bytes a 1.12 master took.
func TestTranscriptProtobufCalls(t *testing.T) {
	text := transcript(t, "10-protobuf-subscribe.txt")
	sub := hexDump(t, text, "## Request body bytes (61):")
	info := &mesos.FrameworkInfo{User: "root", Name: "sluice-probe-pb", Roles: []string{"sluice-job1"}, FailoverTimeout: ptr(60.0), Checkpoint: ptr(true),
		Capabilities: []mesos.FrameworkInfo_Capability{{Type: mesos.FrameworkInfo_Capability_MULTI_ROLE}, {Type: mesos.FrameworkInfo_Capability_PARTITION_AWARE}}}
	b, err := proto.Marshal(calls.Subscribe(info))
	if err != nil {
		t.Fatal(err)
	}
	// Field order differs (mesos-go writes roles, field 12, where its
	// struct has it), so compare decoded.
	var got, want scheduler.Call
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(sub, &want); err != nil {
		t.Fatalf("the recorded SUBSCRIBE: %v", err)
	}
	if !got.Equal(&want) {
		t.Errorf("SUBSCRIBE\n got %v\nwant %v", &got, &want)
	}
	i := strings.Index(text, "(47 bytes: ")
	revive, err := hex.DecodeString(text[i+len("(47 bytes: ") : i+len("(47 bytes: ")+94])
	if err != nil {
		t.Fatal(err)
	}
	b, err = proto.Marshal(calls.Revive().With(calls.Framework("b2028c62-be0f-4851-b4b3-f3f9459b7497-0000")))
	if err != nil || !bytes.Equal(b, revive) {
		t.Errorf("REVIVE %x, recorded %x (%v)", b, revive, err)
	}
	// Our SUBSCRIBE carries what the transcript's did, and the id both at
	// the top level and in framework_info (06-failover: 400 otherwise).
	c := SubscribeCall(FrameworkOptions{Name: "n", User: "root", Role: "sluice-job1", FailoverTimeout: 60e9}, "fw-1", false)
	if c.FrameworkID.GetValue() != "fw-1" || c.Subscribe.FrameworkInfo.ID.GetValue() != "fw-1" || c.Subscribe.FrameworkInfo.GetFailoverTimeout() != 60 ||
		!c.Subscribe.FrameworkInfo.GetCheckpoint() || len(c.Subscribe.FrameworkInfo.Capabilities) != 3 {
		t.Errorf("SubscribeCall: %v", c)
	}
}

// A real OFFERS record (JSON decodes: nothing new in it) matched for a
// TaskManager: the task takes its resources with the offer's role.
func TestTranscriptOfferMatches(t *testing.T) {
	rec := record(t, transcript(t, "11-redirect.txt"), `{"type":"OFFERS"`)
	var e scheduler.Event
	if err := json.Unmarshal([]byte(rec), &e); err != nil {
		t.Fatalf("the recorded OFFERS: %v", err)
	}
	p := Match(e.Offers.Offers, Request{Role: "sluice-job1", Profile: Profile{CPUs: 1, MemMB: 1024, DiskMB: 100, Ports: 2}, Need: 3})
	if len(p.Accept) != 1 || len(p.Accept[0].Tasks) != 2 {
		t.Fatalf("plan: %+v", p)
	}
	for _, r := range p.Accept[0].Tasks[1].Resources {
		if r.AllocationInfo.GetRole() != "sluice-job1" || r.GetRole() != "*" {
			t.Errorf("resource %v", r)
		}
	}
	if got := p.Accept[0].Tasks[1].Ports; len(got) != 2 || got[0] != 31002 {
		t.Errorf("ports %v", got)
	}
}

// Fact: proto2 getters read an unset enum as its zero value; updates from
// the executor carry no reason, and an unset state reads TASK_STAGING.
func TestTranscriptUpdatePresence(t *testing.T) {
	rec := record(t, transcript(t, "02-launch-and-acknowledge.txt"), `{"type":"UPDATE","update":{"status":{"task_id":{"value":"hello-1"},"state":"TASK_FINISHED"`)
	var e scheduler.Event
	if err := json.Unmarshal([]byte(rec), &e); err != nil {
		t.Fatalf("the recorded UPDATE: %v", err)
	}
	st := e.Update.Status
	if st.Reason != nil {
		t.Fatalf("reason set: %v", st.Reason)
	}
	if st.GetReason() != mesos.REASON_COMMAND_EXECUTOR_FAILED {
		t.Errorf("GetReason() of an unset reason reads %v", st.GetReason())
	}
	if err := DescribeStatus(st); err.Error() != "TASK_FINISHED from SOURCE_EXECUTOR: Command exited with status 0" {
		t.Errorf("describe: %v", err)
	}
	if len(st.UUID) != 16 {
		t.Errorf("uuid %x", st.UUID)
	}
	var none mesos.TaskStatus
	if none.State != nil || none.GetState() != mesos.TASK_STAGING {
		t.Errorf("unset state reads %v", none.GetState())
	}
}
