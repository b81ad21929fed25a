package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/dispatcher"
	"github.com/sluice-stream/sluice/internal/procs"
)

// dispatcherJob writes examples/exactly-once.json with small, slow
// parameters (it runs until cancelled) into dir.
func dispatcherJob(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, "examples/exactly-once.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	nodes := j["nodes"].([]any)
	src := nodes[0].(map[string]any)["params"].(map[string]any)
	src["rows"], src["keys"], src["rate"] = 50_000_000, 100, 5000
	nodes[2].(map[string]any)["params"].(map[string]any)["path"] = filepath.Join(dir, "out")
	j["checkpoint"].(map[string]any)["interval"] = "150ms"
	out, _ := json.Marshal(j)
	p := filepath.Join(dir, "job.json")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var listeningRE = regexp.MustCompile(`msg="dispatcher listening" addr=(\S+)`)

// startDispatcher starts `sluice dispatcher` on store and returns it and
// its URL.
func startDispatcher(t *testing.T, dir, store, token string) (*exec.Cmd, string, logFile) {
	t.Helper()
	cmd, log := startLogged(t, context.Background(), dir, "dispatcher", "--listen", "127.0.0.1:0", "--store", store,
		"--resource-manager", "local", "--work-dir", filepath.Join(dir, "work"), "--token-file", token)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(time.Minute)
	for {
		if m := listeningRE.FindStringSubmatch(log.String()); m != nil {
			return cmd, m[1], log
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dispatcher does not listen after a minute:\n%s", tail(log.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dcli runs a client command; it returns stdout and the exit code.
func dcli(t *testing.T, url, token string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(sluiceBin, append(args[:1:1], append([]string{"--dispatcher", url, "--token-file", token}, args[1:]...)...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Logf("sluice %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(errb.String()))
	}
	return out.String(), code
}

func dispatcherStatus(t *testing.T, url, token, id string) dispatcher.JobStatus {
	t.Helper()
	out, code := dcli(t, url, token, "status", id, "--json")
	if code != 0 {
		t.Fatalf("sluice status: exit %d", code)
	}
	var st dispatcher.JobStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func waitDispatcherJob(t *testing.T, url, token, id string, ok func(dispatcher.JobStatus) bool, what string) dispatcher.JobStatus {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := dispatcherStatus(t, url, token, id)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: not %s after 90s: %+v", id, what, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// frameworkMasters lists the live `sluice framework` processes of haDir.
func frameworkMasters(haDir string) []int {
	var out []int
	for _, p := range procs.Live() {
		if bytes.Contains(p.Cmdline, []byte("\x00framework\x00")) && bytes.Contains(p.Cmdline, []byte(haDir)) {
			out = append(out, p.PID)
		}
	}
	return out
}

// TestDispatcherLocal: sluice dispatcher with local framework masters;
// the CLI submits the exactly-once example, which runs and checkpoints
// under the store; a savepoint; the dispatcher is killed and started
// again: it recovers the job and adopts its running master (no second
// one); its master is killed and started again with the same
// TaskManagers; cancel with a savepoint ends the master and its TaskManagers.
func TestDispatcherLocal(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() {
		// Nothing this test started may outlive it.
		for _, p := range procs.Live() {
			if bytes.Contains(p.Cmdline, []byte(dir)) {
				_ = syscall.Kill(p.PID, syscall.SIGKILL)
			}
		}
	})
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t0ken-for-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := "file://" + filepath.Join(dir, "store")
	job := dispatcherJob(t, dir)
	d1, url, log1 := startDispatcher(t, dir, store, token)

	out, code := dcli(t, url, token, "submit", job, "--json")
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, tail(log1.String(), 3000))
	}
	var sub struct{ ID string }
	if err := json.Unmarshal([]byte(out), &sub); err != nil || sub.ID == "" {
		t.Fatalf("submit --json: %q %v", out, err)
	}
	id := sub.ID
	st := waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.LatestCheckpoint != nil && len(s.TaskManagers) > 0 && s.Master != nil
	}, "RUNNING with a checkpoint")
	if !strings.HasPrefix(st.LatestCheckpoint.Path, store+"/jobs/"+id+"/") {
		t.Fatalf("checkpoint %s is not under the job's store directory", st.LatestCheckpoint.Path)
	}
	masterPID := st.Master.PID

	// People get a table.
	if out, code := dcli(t, url, token, "list"); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "RUNNING") {
		t.Fatalf("list: exit %d:\n%s", code, out)
	}
	out, code = dcli(t, url, token, "savepoint", id)
	sp, ok := strings.CutPrefix(strings.TrimSpace(out), "savepoint: ")
	if code != 0 || !ok {
		t.Fatalf("savepoint: exit %d: %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(strings.TrimPrefix(sp, "file://"), "_metadata")); err != nil {
		t.Fatalf("the savepoint's metadata: %v", err)
	}

	// Kill the dispatcher; the next one adopts the master.
	if err := d1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = d1.Wait()
	if procs.Exited(masterPID) {
		t.Fatal("the master died with the dispatcher")
	}
	_, url, log2 := startDispatcher(t, dir, store, token)
	st = waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool { return s.State == dispatcher.Running && s.Master != nil }, "RUNNING again")
	if st.Master.PID != masterPID || !st.Master.Adopted || st.MasterLaunches != 1 {
		t.Fatalf("after the dispatcher's restart: master %+v, launches %d; want pid %d adopted, 1 launch\n%s",
			st.Master, st.MasterLaunches, masterPID, tail(log2.String(), 3000))
	}
	if ms := frameworkMasters(st.HADir); len(ms) != 1 {
		t.Fatalf("%d framework masters run for the job: %v", len(ms), ms)
	}
	if !strings.Contains(log2.String(), "adopted the running master") {
		t.Fatalf("the log does not tell the adoption:\n%s", tail(log2.String(), 3000))
	}

	// The master dies: the dispatcher starts another on the job's HA
	// directory, which takes the job over with the same TaskManagers.
	tms := procs.TaskManagersWith(dir)
	if len(tms) == 0 {
		t.Fatal("no TaskManager processes found")
	}
	if err := syscall.Kill(masterPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = waitDispatcherJob(t, url, token, id, func(s dispatcher.JobStatus) bool {
		return s.State == dispatcher.Running && s.Master != nil && s.Master.PID != masterPID && len(s.TaskManagers) > 0
	}, "RUNNING on a new master")
	if st.MasterRestarts != 1 || st.Master.Epoch < 2 {
		t.Fatalf("after the master's death: %+v", st)
	}
	if now := procs.TaskManagersWith(dir); !slices.Equal(now, tms) {
		t.Fatalf("TaskManager processes %v, before the master died %v: want the same", now, tms)
	}
	masterPID = st.Master.PID

	// Scripts get exit codes.
	if _, code := dcli(t, url, token, "status", "0123456789abcdef"); code != exitNotFound {
		t.Fatalf("status of an unknown job: exit %d, want %d", code, exitNotFound)
	}
	bad := filepath.Join(dir, "bad-token")
	_ = os.WriteFile(bad, []byte("nope"), 0o600)
	if _, code := dcli(t, url, bad, "list"); code != exitAuth {
		t.Fatalf("wrong token: exit %d, want %d", code, exitAuth)
	}

	out, code = dcli(t, url, token, "cancel", id, "--savepoint")
	if code != 0 || !strings.Contains(out, "CANCELED") || !strings.Contains(out, "savepoint: file://") {
		t.Fatalf("cancel --savepoint: exit %d:\n%s\n%s", code, out, tail(log2.String(), 3000))
	}
	if _, code := dcli(t, url, token, "cancel", id); code != exitConflict {
		t.Fatalf("cancel of a cancelled job: exit %d, want %d", code, exitConflict)
	}
	deadline := time.Now().Add(time.Minute)
	for !procs.Exited(masterPID) || len(procs.TaskManagersWith(dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("master %d or TaskManagers %v still run after the cancel", masterPID, procs.TaskManagersWith(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := dispatcherStatus(t, url, token, id); st.State != dispatcher.Canceled || st.LastSavepoint == "" {
		t.Fatalf("after cancel: %+v", st)
	}
}

// TestDispatcherTLSAndEnv: the dispatcher configured by SLUICE_…
// variables alone serves HTTPS with the given certificate; the CLI trusts
// it with --ca-file, and a plain-HTTP client gets no answer it can use.
func TestDispatcherTLSAndEnv(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSignedCert(t)
	cert, key, token := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "token")
	for p, b := range map[string][]byte{cert: certPEM, key: keyPEM, token: []byte("tls-t0ken")} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(dir, "dispatcher.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(sluiceBin, "dispatcher")
	cmd.Env = append(os.Environ(), "SLUICE_LISTEN=127.0.0.1:0", "SLUICE_STORE=file://"+filepath.Join(dir, "store"),
		"SLUICE_TLS_CERT="+cert, "SLUICE_TLS_KEY="+key, "SLUICE_TOKEN_FILE="+token, "SLUICE_WORK_DIR="+filepath.Join(dir, "work"))
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	log := logFile{f.Name()}
	var url string
	deadline := time.Now().Add(time.Minute)
	for url == "" {
		if m := listeningRE.FindStringSubmatch(log.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("the dispatcher does not listen:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("listening on %s, want https", url)
	}
	if out, code := dcli(t, url, token, "list", "--ca-file", cert); code != 0 || !strings.Contains(out, "ID") {
		t.Fatalf("list over TLS: exit %d: %s", code, out)
	}
	if _, code := dcli(t, url, token, "list"); code != exitUnreachable {
		t.Fatalf("list without trusting the certificate: exit %d, want %d", code, exitUnreachable)
	}
	if _, code := dcli(t, strings.Replace(url, "https://", "http://", 1), token, "list"); code == 0 {
		t.Fatal("plain HTTP was answered")
	}
}

// selfSignedCert makes a certificate for 127.0.0.1 and its key (PEM).
func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}
