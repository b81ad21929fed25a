package kafka_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/sluice-stream/sluice/internal/kafkatest"
)

// selfSigned makes a certificate for 127.0.0.1 and writes it (PEM) to
// caFile, the file a client trusts.
func selfSigned(t *testing.T, caFile string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

const authJob = `{
  "name": "auth", "parallelism": 2, "maxParallelism": 64,
  "checkpoint": {"interval": "100ms", "mode": "at-least-once"},
  "restart": {"strategy": "none"},
  "nodes": [
    {"id": "src", "type": "kafka", "params": {"brokers": [], "topics": ["in"], "bounded": true,
      "fields": [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}]}},
    {"id": "out", "type": "kafka", "inputs": [{"from": "src", "partition": "rebalance"}], "params": {"brokers": [], "topic": "out", "keyField": "id"}}
  ]
}`

// TestKafkaSASLAndTLS runs a kafka-to-kafka job against a kfake cluster
// that requires SASL over TLS, with each mechanism (the password from the
// spec, or from an environment variable), and checks that a wrong password
// or an untrusted certificate fails the job.
func TestKafkaSASLAndTLS(t *testing.T) {
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	cert := selfSigned(t, caFile)
	roots := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(caFile)
	roots.AppendCertsFromPEM(pemBytes)
	c := kafkatest.StartWith(t, kafkatest.Options{Partitions: 2, Topics: []string{"in", "out"},
		Kfake: []kfake.Opt{kfake.EnableSASL(), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
			kfake.Superuser("PLAIN", "plainuser", "plainpw"),
			kfake.Superuser("SCRAM-SHA-256", "scram256", "pw256"),
			kfake.Superuser("SCRAM-SHA-512", "scram512", "pw512")},
		Client: []kgo.Opt{kgo.SASL(plain.Auth{User: "plainuser", Pass: "plainpw"}.AsMechanism()),
			kgo.DialTLSConfig(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})}})
	produceIDs(t, c, "in", 2, 0, 500)
	t.Setenv("SLUICE_TEST_KAFKA_PW", "plainpw")
	tlsOn := `{"enabled":true,"caFile":"` + caFile + `"}`
	for _, sasl := range []string{
		`{"mechanism":"PLAIN","user":"plainuser","passwordEnv":"SLUICE_TEST_KAFKA_PW"}`,
		`{"mechanism":"SCRAM-SHA-256","user":"scram256","password":"pw256"}`,
		`{"mechanism":"SCRAM-SHA-512","user":"scram512","password":"pw512"}`,
	} {
		j := startKafkaJob(t, authJob, brokersSet("src", c), brokersSet("out", c),
			"nodes.src.params.sasl="+sasl, "nodes.out.params.sasl="+sasl, "nodes.src.params.tls="+tlsOn, "nodes.out.params.tls="+tlsOn)
		if _, err := j.wait(t); err != nil {
			t.Fatalf("%s: job: %v\nlog:\n%s", sasl, err, j.log())
		}
	}
	// Three runs, each read all of "in" and wrote it to "out".
	ids := idSet(t, c.ReadCommitted(t, "out", 2))
	for i := 0; i < 500; i++ {
		if ids[int64(i)] != 3 {
			t.Fatalf("id %d written %d times, want 3 (once per run)", i, ids[int64(i)])
		}
	}

	for name, sets := range map[string][]string{
		"wrong password": {`nodes.src.params.sasl={"mechanism":"SCRAM-SHA-256","user":"scram256","password":"nope"}`, "nodes.src.params.tls=" + tlsOn},
		"untrusted cert": {`nodes.src.params.sasl={"mechanism":"SCRAM-SHA-256","user":"scram256","password":"pw256"}`, `nodes.src.params.tls={"enabled":true}`},
	} {
		// The sink connects correctly, so the only failure is the source's
		// (the two open concurrently: a misconfigured sink could fail first
		// with a plain EOF).
		good := []string{`nodes.out.params.sasl={"mechanism":"PLAIN","user":"plainuser","password":"plainpw"}`, "nodes.out.params.tls=" + tlsOn}
		j := startKafkaJob(t, authJob, append(append(sets, good...), brokersSet("src", c), brokersSet("out", c))...)
		_, err := j.wait(t)
		if err == nil {
			t.Fatalf("%s: the job did not fail", name)
		}
		// kfake hangs up on a failed authentication (the client sees EOF)
		// where Kafka answers with an error.
		want := map[string]string{"wrong password": "connecting to", "untrusted cert": "certificate"}[name]
		if !strings.Contains(err.Error(), want) && !strings.Contains(j.log(), want) {
			t.Fatalf("%s: error %v does not mention %q", name, err, want)
		}
	}
}
