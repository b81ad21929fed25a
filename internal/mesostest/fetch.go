package mesostest

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
)

// fetch is the Mesos fetcher without a cache: each URI lands in the sandbox
// under its output_file, or else its basename; executable sets mode 755; extract (default true)
// unpacks archives into the sandbox and keeps the archive.
func (m *Master) fetch(uris []mesos.CommandInfo_URI, sandbox string, log io.Writer) error {
	for _, u := range uris {
		fmt.Fprintf(log, "Fetching URI '%s'\n", u.Value)
		dst, err := m.fetchOne(u.Value, u.GetOutputFile(), sandbox)
		if err != nil {
			fmt.Fprintf(log, "Failed to fetch '%s': %v\n", u.Value, err)
			return err
		}
		mode := os.FileMode(0o644)
		if u.Executable != nil && *u.Executable {
			mode = 0o755
		}
		if err := os.Chmod(dst, mode); err != nil {
			return err
		}
		fmt.Fprintf(log, "Fetched '%s' to '%s'\n", u.Value, dst)
		extract := u.Extract == nil || *u.Extract
		if extract && isArchive(dst) {
			if err := extractArchive(dst, sandbox); err != nil {
				fmt.Fprintf(log, "Failed to extract '%s': %v\n", dst, err)
				return err
			}
			fmt.Fprintf(log, "Extracted '%s' into '%s'\n", dst, sandbox)
		}
	}
	fmt.Fprintf(log, "Successfully fetched all URIs into '%s'\n", sandbox)
	return nil
}

func (m *Master) fetchOne(raw, outputFile, sandbox string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	name := path.Base(u.Path)
	if outputFile != "" {
		// A path relative to the sandbox, as the fetcher takes it; never
		// out of it.
		name = filepath.Clean(outputFile)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return "", fmt.Errorf("output_file %q is not inside the sandbox", outputFile)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(sandbox, name)), 0o755); err != nil {
			return "", err
		}
	}
	if name == "" || name == "/" || name == "." {
		return "", fmt.Errorf("no file name in %q", raw)
	}
	dst := filepath.Join(sandbox, name)
	switch u.Scheme {
	case "", "file":
		src := u.Path
		if u.Scheme == "" {
			src = raw
		}
		in, err := os.Open(src)
		if err != nil {
			return "", err
		}
		defer in.Close()
		return dst, writeFile(dst, in)
	case "http", "https":
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		go func() {
			select {
			case <-m.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %s", resp.Status)
		}
		return dst, writeFile(dst, resp.Body)
	}
	return "", fmt.Errorf("unsupported URI scheme %q", u.Scheme)
}

// writeFile writes r to dst from a child process, as Mesos' fetcher is
// one: a file this process held open for writing would be inherited, still
// open, by any process it forks meanwhile (another task's launch, a test's
// exec), and exec-ing the fetched binary would then fail with ETXTBSY
// ("text file busy").
func writeFile(dst string, r io.Reader) error {
	cmd := exec.Command("/bin/sh", "-c", `cat > "$1"`, "sh", dst)
	cmd.Stdin = r
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("writing %s: %w: %s", dst, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func isArchive(name string) bool {
	for _, suf := range []string{".tar", ".tar.gz", ".tgz", ".zip"} {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return false
}

func safeJoin(root, name string) (string, error) {
	p := filepath.Join(root, name)
	if p != root && !strings.HasPrefix(p, root+string(filepath.Separator)) {
		return "", fmt.Errorf("archive entry %q leaves the sandbox", name)
	}
	return p, nil
}

func extractArchive(file, dir string) error {
	if strings.HasSuffix(file, ".zip") {
		zr, err := zip.OpenReader(file)
		if err != nil {
			return err
		}
		defer zr.Close()
		for _, f := range zr.File {
			p, err := safeJoin(dir, f.Name)
			if err != nil {
				return err
			}
			if f.FileInfo().IsDir() {
				if err := os.MkdirAll(p, 0o755); err != nil {
					return err
				}
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			rc, err := f.Open()
			if err != nil {
				return err
			}
			err = writeFile(p, rc)
			rc.Close()
			if err != nil {
				return err
			}
			os.Chmod(p, f.Mode().Perm())
		}
		return nil
	}
	in, err := os.Open(file)
	if err != nil {
		return err
	}
	defer in.Close()
	var r io.Reader = in
	if !strings.HasSuffix(file, ".tar") {
		gz, err := gzip.NewReader(in)
		if err != nil {
			return err
		}
		defer gz.Close()
		r = gz
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p, err := safeJoin(dir, h.Name)
		if err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := writeFile(p, tr); err != nil {
				return err
			}
			os.Chmod(p, os.FileMode(h.Mode).Perm())
		case tar.TypeSymlink:
			os.Symlink(h.Linkname, p)
		}
	}
}
