package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemo runs the demo on the Keystone router for a few seconds (any
// free port, no REST API) and checks that every output topic got records.
func TestDemo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/sluice")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building sluice: %v\n%s", err, out)
	}
	var out, log syncBuffer
	cfg := config{job: "../../examples/keystone-router.json", sluice: bin, partitions: 3, rate: 2000,
		every: time.Second, duration: 3 * time.Second, expect: true, out: &out, log: &log}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	counts, err := run(ctx, cfg)
	if err != nil {
		t.Fatalf("demo: %v\noutput:\n%s\nsluice:\n%s", err, out.String(), log.String())
	}
	for _, topic := range []string{"keystone-playback", "keystone-errors", "keystone-archive", "keystone-dlq"} {
		if counts[topic] == 0 {
			t.Errorf("%s: no records (counts %v)", topic, counts)
		}
	}
	if !strings.Contains(out.String(), "produced") {
		t.Errorf("no progress lines:\n%s", out.String())
	}
	t.Logf("counts %v\n%s", counts, out.String())
}
