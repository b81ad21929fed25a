package fs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sluice-stream/sluice/engine/fs"
)

// testExclusive races racers creators for one path: exactly one wins, the
// others get ErrExist, and the winner's bytes are there.
func testExclusive(t *testing.T, f fs.FS, dir string) {
	ctx := context.Background()
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	p := fs.Join(dir, "epochs", "00000000000000000001")
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fs.CreateExclusive(ctx, f, p, []byte(fmt.Sprintf("racer %d", i)))
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("racers %d and %d both created %s", won, i, p)
		case err == nil:
			won = i
		case !errors.Is(err, fs.ErrExist):
			t.Fatalf("racer %d: %v, want ErrExist", i, err)
		}
	}
	if won < 0 {
		t.Fatal("nobody created the file")
	}
	got, err := f.ReadFile(ctx, p)
	if err != nil || string(got) != fmt.Sprintf("racer %d", won) {
		t.Fatalf("read %q, %v; want racer %d's bytes", got, err, won)
	}
	es, _ := f.List(ctx, fs.Join(dir, "epochs"))
	if len(es) != 1 {
		t.Errorf("left behind: %v", es)
	}
}

func TestLocalCreateExclusive(t *testing.T) {
	testExclusive(t, fs.Local{}, t.TempDir())
}

func TestHDFSCreateExclusive(t *testing.T) {
	c := startHDFS(t)
	f, p := openHDFS(t, "hdfs://"+c.Addr()+"/ha")
	testExclusive(t, f, p)
}
