package nodes_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/nodes"
	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// runJob runs a planned job and returns its error and log.
func runJob(t *testing.T, specJSON, restore string, edit func(*runtime.Options), sets ...string) (*runtime.Result, error, string) {
	t.Helper()
	g, opts := planJob(t, specJSON, sets...)
	opts.Restore = restore
	var logs strings.Builder
	opts.Log = slog.New(slog.NewTextHandler(&lockedWriter{b: &logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.Storage.Log = opts.Log
	if edit != nil {
		edit(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := runtime.Run(ctx, g, opts)
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return res, err, logs.String()
}

// crashOnSecondCommit makes every run fail at the second checkpoint it
// completes, after the checkpoint is written and before the sink commits.
type crashOnSecondCommit struct {
	mu    sync.Mutex
	first int64
}

func (c *crashOnSecondCommit) hook(_ *runtime.Context, id int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == 0 {
		c.first = id
	}
	if id > c.first {
		return errors.New("test: crash between pre-commit and commit")
	}
	return nil
}

// TestKafkaSinkTxnTimeoutWhileDown kills an exactly-once job between the
// pre-commit and the commit of a checkpoint and keeps it down past the
// transaction timeout, several times in a row: the broker aborts the
// checkpoint's transactions, and each restore must fall back to the
// checkpoint before, whose sources replay the rows. A read_committed
// reader then sees every row exactly once.
func TestKafkaSinkTxnTimeoutWhileDown(t *testing.T) {
	c := kafkatest.Start(t, 0, 4, "out")
	dir := t.TempDir()
	const n = 20000
	sets := []string{brokersSet("out", c), "checkpoint.storage=file://" + filepath.Join(dir, "chk"), "checkpoint.retained=5",
		"nodes.out.params.transactionTimeout=3s", "nodes.src.params.rate=20000"}
	fallbacks := 0
	for i := 0; i < 3; i++ {
		crash := &crashOnSecondCommit{}
		undo := nodes.SetKafkaBeforeCommit(crash.hook)
		restore := ""
		if i > 0 {
			restore = "latest"
		}
		_, err, logs := runJob(t, seqToKafka, restore, nil, sets...)
		undo()
		if err == nil || !strings.Contains(err.Error(), "crash between pre-commit and commit") {
			t.Fatalf("run %d: %v, want the crash\nlog:\n%s", i, err, logs)
		}
		if strings.Contains(logs, "whose sources replay the lost output") {
			fallbacks++
		}
		time.Sleep(3500 * time.Millisecond) // down past the transaction timeout
	}
	_, err, logs := runJob(t, seqToKafka, "latest", nil, sets...)
	if err != nil {
		t.Fatalf("last run: %v\nlog:\n%s", err, logs)
	}
	if strings.Contains(logs, "whose sources replay the lost output") {
		fallbacks++
	}
	checkIDs(t, c.ReadCommitted(t, "out", 4), n)
	if fallbacks != 3 {
		t.Fatalf("%d restores fell back to an older checkpoint, want 3", fallbacks)
	}
}
