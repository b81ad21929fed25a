package mesos

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"testing"
)

func TestServeBinary(t *testing.T) {
	b, err := ServeBinary("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	resp, err := http.Get(b.URI)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d %v", b.URI, resp.StatusCode, err)
	}
	exe, _ := os.Executable()
	want, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("served %d bytes, the executable has %d", len(got), len(want))
	}
}
