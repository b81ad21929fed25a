package marathon

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFiles writes files into dir, creating it. It is the package's only
// I/O: the builders return bytes.
func WriteFiles(dir string, files []File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("package directory: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	return nil
}
