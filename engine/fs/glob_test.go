package fs_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sluice-stream/sluice/engine/fs"
)

// testGlob checks Glob on f under root: the file source's patterns.
func testGlob(t *testing.T, f fs.FS, root string) {
	ctx := context.Background()
	for _, name := range []string{"x/1.json", "x/2.json", "x/.hidden.json", "x/3.txt", "y/4.json", "y/sub/5.json"} {
		if err := f.WriteFile(ctx, fs.Join(root, "g", name), []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	for pattern, want := range map[string][]string{
		"g/x/*.json":      {"g/x/.hidden.json", "g/x/1.json", "g/x/2.json"}, // as filepath.Glob: * matches a leading dot
		"g/*/[1-4].json":  {"g/x/1.json", "g/x/2.json", "g/y/4.json"},
		"g/y/sub/5.json":  {"g/y/sub/5.json"},
		"g/nothing/*.txt": nil,
	} {
		got, err := fs.Glob(ctx, f, fs.Join(root, pattern))
		if err != nil {
			t.Fatalf("glob %s: %v", pattern, err)
		}
		for i := range want {
			want[i] = fs.Join(root, want[i])
		}
		if !slices.Equal(got, want) {
			t.Fatalf("glob %s: %v, want %v", pattern, got, want)
		}
	}
}

func TestLocalGlob(t *testing.T) {
	root := filepath.ToSlash(t.TempDir())
	testGlob(t, fs.Local{}, root)
	// Glob agrees with filepath.Glob on the local disk.
	for _, pattern := range []string{"g/*/*.json", "g/x/?.json", "g/*"} {
		want, _ := filepath.Glob(filepath.Join(root, pattern))
		got, err := fs.Glob(context.Background(), fs.Local{}, fs.Join(root, pattern))
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("glob %s: %v, %v; filepath.Glob: %v", pattern, got, err, want)
		}
	}
}

func TestHDFSGlob(t *testing.T) {
	c := startHDFS(t)
	f, root := openHDFS(t, "hdfs://"+c.Addr()+"/glob")
	testGlob(t, f, root)
}
