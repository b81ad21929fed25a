package kafka

import (
	"crypto/sha256"
	"testing"
)

// TestScramRFC7677 replays the SCRAM-SHA-256 exchange of RFC 7677 §3.
func TestScramRFC7677(t *testing.T) {
	c := &scramClient{hash: sha256.New}
	if err := c.Begin("user", "pencil", ""); err != nil {
		t.Fatal(err)
	}
	c.nonce = "rOprNGfwEbeRWgbNEkqO" // the RFC's client nonce
	first, err := c.Step("")
	if err != nil || first != "n,,n=user,r=rOprNGfwEbeRWgbNEkqO" {
		t.Fatalf("client-first %q, %v", first, err)
	}
	final, err := c.Step("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
	if want := "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="; err != nil || final != want {
		t.Fatalf("client-final %q, %v; want %q", final, err, want)
	}
	if c.Done() {
		t.Fatal("done before the server's final message")
	}
	if _, err := c.Step("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="); err != nil || !c.Done() {
		t.Fatalf("server-final: %v, done %v", err, c.Done())
	}
	// A forged server signature is refused.
	c2 := &scramClient{hash: sha256.New}
	_ = c2.Begin("user", "pencil", "")
	c2.nonce = "rOprNGfwEbeRWgbNEkqO"
	_, _ = c2.Step("")
	_, _ = c2.Step("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
	if _, err := c2.Step("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="); err == nil {
		t.Fatal("a wrong server signature verified")
	}
}
