package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/engine/connectors/kafka"
	"github.com/sluice-stream/sluice/internal/jobtest"

	"github.com/sluice-stream/sluice/engine/runtime"
	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// runJob runs a planned job and returns its error and log.
func runJob(t *testing.T, specJSON, restore string, edit func(*runtime.Options), sets ...string) (*runtime.Result, error, string) {
	t.Helper()
	g, opts := jobtest.Plan(t, specJSON, sets...)
	opts.Restore = restore
	logs := &jobtest.LockedWriter{B: new(strings.Builder)}
	opts.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts.Storage.Log = opts.Log
	if edit != nil {
		edit(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := runtime.Run(ctx, g, opts)
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
		undo := kafka.SetKafkaBeforeCommit(crash.hook)
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

// TestKafkaSinkCorruptCheckpointFallback: after an exactly-once job
// committed its output, its latest checkpoint is corrupt; falling back to
// the one before would write that output again, so the restore is refused
// with the corrupt file named, unless duplicates are allowed.
func TestKafkaSinkCorruptCheckpointFallback(t *testing.T) {
	c := kafkatest.Start(t, 0, 4, "out")
	chk := filepath.Join(t.TempDir(), "chk")
	// About 1 s of rows over checkpoints every 200 ms: the final checkpoint
	// pre-commits rows written after the one before it.
	sets := []string{brokersSet("out", c), "checkpoint.storage=file://" + chk, "checkpoint.retained=5", "checkpoint.interval=200ms", "nodes.src.params.rate=20000"}
	runKafkaJob(t, seqToKafka, "", sets...)
	dirs, _ := filepath.Glob(filepath.Join(chk, "chk-*"))
	var ids []int64
	for _, d := range dirs {
		var id int64
		if _, err := fmt.Sscanf(filepath.Base(d), "chk-%d", &id); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	// Corrupt the newest checkpoints down to the newest one whose sink
	// state records a transaction it pre-committed (the last checkpoints
	// of a bounded job may have no rows after the one before): the
	// fallback target is then followed by committed output.
	newest := ids[len(ids)-1]
	for k := len(ids) - 1; ; k-- {
		if k < 1 {
			t.Fatalf("no checkpoint of %v pre-committed a transaction with one retained before it", ids)
		}
		cdir := filepath.Join(chk, fmt.Sprintf("chk-%d", ids[k]))
		state := filepath.Join(cdir, "src-0")
		data, err := os.ReadFile(state)
		if err != nil || len(data) == 0 {
			t.Fatalf("reading %s: %v (%d bytes)", state, err, len(data))
		}
		data[len(data)/2] ^= 0x40
		if err := os.WriteFile(state, data, 0o644); err != nil {
			t.Fatal(err)
		}
		pre := regexp.MustCompile(fmt.Sprintf(`txn \S+ \d+ \d+ %d `, ids[k]))
		sinkState, _ := filepath.Glob(filepath.Join(cdir, "out-*"))
		found := false
		for _, f := range sinkState {
			b, _ := os.ReadFile(f)
			found = found || pre.Match(b)
		}
		if found {
			break
		}
	}

	_, err, logs := runJob(t, seqToKafka, "latest", nil, sets...)
	var refused *runtime.FallbackRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "src-0") || !strings.Contains(err.Error(), fmt.Sprintf("checkpoint %d is corrupt", newest)) {
		t.Fatalf("restore: %v, want a refused fallback naming checkpoint %d and src-0\nlog:\n%s", err, newest, logs)
	}
	t.Logf("refused: %v", err)
	_, err, logs = runJob(t, seqToKafka, "latest", func(o *runtime.Options) { o.AllowFallbackDuplicates = true }, sets...)
	if err != nil || !strings.Contains(logs, "falling back to checkpoint") {
		t.Fatalf("restore allowing duplicates: %v\nlog:\n%s", err, logs)
	}
}
