package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The commands that wrote examples/marathon/ (its README shows them); the
// test runs them again so the committed files never go stale.
var (
	marathonExampleApp = []string{"marathon", "app",
		"--binary-uri", "https://downloads.example.com/sluice/v0.1.0/sluice-linux-amd64",
		"--store", "hdfs://namenode:8020/sluice",
		"--mesos-master", "http://mesos-master:5050"}
	marathonExamplePackage = []string{"marathon", "package",
		"--binary-uri", "https://downloads.example.com/sluice/v0.1.0/sluice-linux-amd64",
		"--store", "hdfs://name-0-node.hdfs.autoip.dcos.thisdcos.directory:9001/sluice"}
)

func TestMarathonExamples(t *testing.T) {
	regenerate := "regenerate with: sluice " + strings.Join(marathonExampleApp, " ") + " > examples/marathon/dispatcher.json; " +
		"sluice " + strings.Join(marathonExamplePackage, " ") + " --out examples/marathon/package"

	out, err := exec.Command(sluiceBin, marathonExampleApp...).Output()
	if err != nil {
		t.Fatalf("sluice %v: %v", marathonExampleApp, err)
	}
	want, err := os.ReadFile(repoFile(t, "examples/marathon/dispatcher.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want) {
		t.Errorf("examples/marathon/dispatcher.json is stale; %s\nnow:\n%s", regenerate, out)
	}

	dir := t.TempDir()
	cmd := exec.Command(sluiceBin, append(slices.Clone(marathonExamplePackage), "--out", dir)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sluice %v: %v\n%s", marathonExamplePackage, err, msg)
	}
	gen, _ := filepath.Glob(filepath.Join(dir, "*"))
	committed, _ := filepath.Glob(repoFile(t, "examples/marathon/package/*"))
	names := func(paths []string) []string {
		var n []string
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	if !slices.Equal(names(gen), names(committed)) {
		t.Fatalf("examples/marathon/package has %v, the command writes %v; %s", names(committed), names(gen), regenerate)
	}
	for _, p := range gen {
		now, _ := os.ReadFile(p)
		old, _ := os.ReadFile(repoFile(t, "examples/marathon/package/"+filepath.Base(p)))
		if !bytes.Equal(now, old) {
			t.Errorf("examples/marathon/package/%s is stale; %s", filepath.Base(p), regenerate)
		}
	}
}

// TestMarathonCommandErrors: bad command lines exit 2 and name the flag.
func TestMarathonCommandErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "--store", "hdfs://nn/x"}, "--binary-uri or --image is required"},
		{[]string{"app", "--store", "hdfs://nn/x", "--binary-uri", "https://h/sluice", "--image", "sluice:1"}, "--binary-uri and --image are exclusive"},
		{[]string{"app", "--store", "hdfs://nn/x", "--image", "sluice:1", "--cpus", "0"}, "--cpus must be greater than 0"},
		{[]string{"app", "--store", "hdfs://nn/x", "--image", "sluice:1", "--label", "novalue"}, "not KEY=VALUE"},
		{[]string{"app", "--image", "sluice:1", "extra"}, "unexpected arguments"},
		{[]string{"package", "--store", "hdfs://nn/x", "--image", "sluice:1"}, "--out is required"},
		{[]string{"package", "--out", "x", "--image", "sluice:1"}, "--store is required"},
		{[]string{"deploy"}, "unknown subcommand"},
		{nil, "usage"},
	} {
		var stdout, stderr bytes.Buffer
		code := marathonMain(c.args, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), c.want) || stdout.Len() != 0 {
			t.Errorf("sluice marathon %v: exit %d, stderr %q, stdout %q; want exit 2 and %q", c.args, code, stderr.String(), stdout.String(), c.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := marathonMain([]string{"app", "--store", "file:///var/sluice", "--image", "sluice:1", "--resource-manager", "local", "--label", "team=streams"}, &stdout, &stderr); code != 0 ||
		!strings.Contains(stdout.String(), `"team": "streams"`) {
		t.Errorf("exit %d, stderr %q, stdout %s", code, stderr.String(), stdout.String())
	}
}
