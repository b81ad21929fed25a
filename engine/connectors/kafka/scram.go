package kafka

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// scramClient is the client side of SCRAM (RFC 5802, RFC 7677) for sarama's
// SASL/SCRAM mechanisms, which leave the implementation to the user. No
// channel binding ("n,,") and no authzid, as Kafka expects.
type scramClient struct {
	hash func() hash.Hash

	user, password string
	step           int
	nonce          string // ours
	firstBare      string // client-first-message-bare
	serverSig      []byte // expected in server-final
	done           bool
}

func (c *scramClient) Begin(user, password, authzID string) error {
	if authzID != "" {
		return errors.New("scram: authorization ids are not supported")
	}
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("scram: nonce: %w", err)
	}
	c.user, c.password, c.step, c.done = user, password, 0, false
	c.nonce = base64.RawStdEncoding.EncodeToString(b[:])
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		name := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(c.user)
		c.firstBare = "n=" + name + ",r=" + c.nonce
		return "n,," + c.firstBare, nil
	case 2:
		return c.final(challenge)
	case 3:
		c.done = true
		attrs := scramAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("scram: server error: %s", e)
		}
		v, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || !hmac.Equal(v, c.serverSig) {
			return "", errors.New("scram: the server's signature does not verify")
		}
		return "", nil
	}
	return "", errors.New("scram: conversation already over")
}

func (c *scramClient) Done() bool { return c.done }

// final answers server-first with the client proof.
func (c *scramClient) final(serverFirst string) (string, error) {
	attrs := scramAttrs(serverFirst)
	nonce, salt64, iters := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, c.nonce) || len(nonce) == len(c.nonce) {
		return "", errors.New("scram: server nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return "", fmt.Errorf("scram: salt: %w", err)
	}
	n, err := strconv.Atoi(iters)
	if err != nil || n < 1 {
		return "", fmt.Errorf("scram: iteration count %q", iters)
	}
	salted, err := pbkdf2.Key(c.hash, c.password, salt, n, c.hash().Size())
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	clientKey := scramHMAC(c.hash, salted, "Client Key")
	h := c.hash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)
	withoutProof := "c=biws,r=" + nonce // biws: base64("n,,")
	authMsg := c.firstBare + "," + serverFirst + "," + withoutProof
	proof := scramHMAC(c.hash, storedKey, authMsg)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	c.serverSig = scramHMAC(c.hash, scramHMAC(c.hash, salted, "Server Key"), authMsg)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func scramHMAC(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func scramAttrs(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && len(k) == 1 {
			out[k] = v
		}
	}
	return out
}
