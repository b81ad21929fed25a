package jobtest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CommittedLines are the lines of every committed part file ("<prefix>-…",
// not the in-progress ".<prefix>-…" ones) of a file sink's directory, in
// no particular order: callers sort them as their comparison needs.
func CommittedLines(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("reading %s: %v", e.Name(), err)
		}
	}
	return lines
}
