package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/engine/spec"
)

// The flags of `sluice framework --resource-manager mesos` build the Mesos
// resource manager, with the spec's role and constraints; bad input is a
// clear error before anything connects.
func TestMesosFlags(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	job := &spec.Job{Name: "j", Role: "spec-role", Constraints: [][]string{{"hostname", "UNIQUE"}}}
	build := func(args ...string) (string, error) {
		fs := flag.NewFlagSet("framework", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		c := clusterFlags(fs, true)
		if err := fs.Parse(append([]string{"--resource-manager", "mesos"}, args...)); err != nil {
			return "", err
		}
		rm, err := c.mesosRM(job, spec.Resources{CPUs: 0.5}, 2, "info", log)
		if err != nil {
			return "", err
		}
		return rm.Status(), nil
	}
	st, err := build("--mesos-master", "127.0.0.1:1", "--binary-uri", "http://files/sluice", "--principal", "p", "--secret-file", secret,
		"--constraint", "rack:LIKE:r[12]")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st, "http://127.0.0.1:1") {
		t.Errorf("status %q", st)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--mesos-master"},
		{[]string{"--mesos-master", "ftp://x"}, "--mesos-master"},
		{[]string{"--mesos-master", "m:1", "--secret-file", secret}, "--secret-file needs --principal"},
		{[]string{"--mesos-master", "m:1", "--principal", "p", "--secret-file", secret + "-missing"}, "--secret-file"},
		{[]string{"--mesos-master", "m:1", "--constraint", "hostname:SOMETIMES"}, "--constraint"},
	} {
		if _, err := build(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error about %s", c.args, err, c.want)
		}
	}
	// The role: the flag, else the spec's, else an error.
	job.Role = ""
	if _, err := build("--mesos-master", "m:1", "--binary-uri", "http://f/s"); err == nil || !strings.Contains(err.Error(), "--role") {
		t.Errorf("no role: %v", err)
	}
	if _, err := build("--mesos-master", "m:1", "--binary-uri", "http://f/s", "--role", "r"); err != nil {
		t.Errorf("--role: %v", err)
	}
	t.Setenv("SLUICE_ROLE", "env-role")
	t.Setenv("SLUICE_MESOS_CONSTRAINTS", "hostname:UNIQUE; rack:GROUP_BY")
	if _, err := build("--mesos-master", "m:1", "--binary-uri", "http://f/s"); err != nil {
		t.Errorf("role and constraints from the environment: %v", err)
	}
}
