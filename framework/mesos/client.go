package mesos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/gogo/protobuf/proto"
	"github.com/mesos/mesos-go/api/v1/lib/encoding/framing"
	"github.com/mesos/mesos-go/api/v1/lib/master"
	"github.com/mesos/mesos-go/api/v1/lib/recordio"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
)

// Client speaks the v1 scheduler and operator HTTP APIs of a Mesos master
// in protobuf, with mesos-go's messages. It is its own transport rather
// than mesos-go's httpsched because of what that does against a 1.12
// master: its JSON decoder rejects enum values newer than the library
// (QUOTA_V2 in SUBSCRIBED), and it follows a redirect to the leading
// master only for SUBSCRIBE. Here every call follows a 307 and remembers
// the leader for the next one.
type Client struct {
	// Masters are the masters' base URLs (http://host:5050); a call goes
	// to the last known leader, then tries the others.
	Masters []string
	// Principal and Secret: HTTP basic authentication when Principal is set.
	Principal, Secret string
	HTTP              *http.Client // default: one that does not follow redirects itself

	mu       sync.Mutex
	leader   string
	streamID string
}

// NewClient parses a --mesos-master value: one URL or host:port, or a
// comma-separated list of them.
func NewClient(masters string) (*Client, error) {
	c := &Client{}
	for _, m := range strings.Split(masters, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		if !strings.Contains(m, "://") {
			m = "http://" + m
		}
		u, err := url.Parse(m)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("mesos master %q: want http://host:port", m)
		}
		c.Masters = append(c.Masters, u.Scheme+"://"+u.Host+strings.TrimSuffix(u.Path, "/"))
	}
	if len(c.Masters) == 0 {
		return nil, errors.New("no mesos master given")
	}
	return c, nil
}

// HTTPError is a master's answer other than the one expected.
type HTTPError struct {
	Status int
	Body   string // the master's text (error bodies are text/plain)
}

func (e *HTTPError) Error() string {
	b := strings.TrimSpace(e.Body)
	if b == "" {
		return fmt.Sprintf("mesos master answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("mesos master answered %d %s: %s", e.Status, http.StatusText(e.Status), b)
}

// Leader is the master the client talks to now.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == "" && len(c.Masters) > 0 {
		return c.Masters[0]
	}
	return c.leader
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// candidates: the leader first, then the other masters.
func (c *Client) candidates() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{}
	if c.leader != "" {
		out = append(out, c.leader)
	}
	for _, m := range c.Masters {
		if m != c.leader {
			out = append(out, m)
		}
	}
	return out
}

// redirectTarget reads a 307's Location: Mesos sends it protocol-relative
// ("//host:port/api/v1/scheduler"); the scheme stays the current one.
func redirectTarget(from, location string) (string, error) {
	base, err := url.Parse(from)
	if err != nil {
		return "", err
	}
	u, err := base.Parse(location)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("redirect to %q: not a master address", location)
	}
	return u.Scheme + "://" + u.Host, nil
}

// post sends body to path on the leading master, following redirects and
// trying the other masters when one cannot be reached. The caller closes
// the response's body.
func (c *Client) post(ctx context.Context, path string, body []byte, stream bool) (*http.Response, error) {
	var lastErr error
	for _, base := range c.candidates() {
		target := base
		for hop := 0; hop < 5; hop++ {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+path, bytes.NewReader(body))
			if err != nil {
				return nil, fmt.Errorf("mesos: %w", err)
			}
			req.Header.Set("Content-Type", "application/x-protobuf")
			req.Header.Set("Accept", "application/x-protobuf")
			if c.Principal != "" {
				req.SetBasicAuth(c.Principal, c.Secret)
			}
			if path == schedulerPath && !stream {
				c.mu.Lock()
				sid := c.streamID
				c.mu.Unlock()
				if sid != "" {
					req.Header.Set("Mesos-Stream-Id", sid)
				}
			}
			resp, err := c.httpClient().Do(req)
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("mesos master %s: %w", target, ctx.Err())
				}
				lastErr = fmt.Errorf("mesos master %s: %w", target, err)
				break // the next master
			}
			if resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect {
				loc := resp.Header.Get("Location")
				drain(resp)
				next, err := redirectTarget(target, loc)
				if err != nil {
					return nil, fmt.Errorf("mesos master %s: %w", target, err)
				}
				target = next
				continue
			}
			c.mu.Lock()
			c.leader = target
			c.mu.Unlock()
			return resp, nil
		}
		if lastErr == nil {
			lastErr = fmt.Errorf("mesos master %s: too many redirects", base)
		}
	}
	return nil, lastErr
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	return &HTTPError{Status: resp.StatusCode, Body: string(b)}
}

const (
	schedulerPath = "/api/v1/scheduler"
	operatorPath  = "/api/v1"
)

// Stream is a subscription's event stream.
type Stream struct {
	ID   string // Mesos-Stream-Id
	body io.ReadCloser
	r    framing.Reader
}

// Next reads the next event; io.EOF when the master ended the stream.
func (s *Stream) Next() (*scheduler.Event, error) {
	frame, err := s.r.ReadFrame()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("mesos event stream: %w", err)
	}
	var e scheduler.Event
	if err := proto.Unmarshal(frame, &e); err != nil {
		return nil, fmt.Errorf("mesos event stream: decoding an event: %w", err)
	}
	return &e, nil
}

// Close ends the subscription's connection.
func (s *Stream) Close() error { return s.body.Close() }

// Events reads the stream on a goroutine of its own until it fails or ctx
// ends: each event on the first channel, the error that ended the stream
// on the second, so that a scheduler's loop can select on events, timers
// and its own work at once.
func (s *Stream) Events(ctx context.Context) (<-chan *scheduler.Event, <-chan error) {
	evs, errc := make(chan *scheduler.Event), make(chan error, 1)
	go func() {
		for {
			e, err := s.Next()
			if err != nil {
				errc <- err
				return
			}
			select {
			case evs <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return evs, errc
}

// Subscribe sends SUBSCRIBE and returns the event stream; the calls that
// follow carry its stream id. ctx bounds the whole stream.
func (c *Client) Subscribe(ctx context.Context, call *scheduler.Call) (*Stream, error) {
	b, err := proto.Marshal(call)
	if err != nil {
		return nil, fmt.Errorf("mesos: encoding SUBSCRIBE: %w", err)
	}
	resp, err := c.post(ctx, schedulerPath, b, true)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("SUBSCRIBE: %w", readError(resp))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-protobuf") {
		drain(resp)
		return nil, fmt.Errorf("SUBSCRIBE: the master answered with Content-Type %q, not protobuf", ct)
	}
	sid := resp.Header.Get("Mesos-Stream-Id")
	c.mu.Lock()
	c.streamID = sid
	c.mu.Unlock()
	return &Stream{ID: sid, body: resp.Body, r: recordio.NewReader(resp.Body)}, nil
}

// Call sends a non-SUBSCRIBE scheduler call (202 expected).
func (c *Client) Call(ctx context.Context, call *scheduler.Call) error {
	b, err := proto.Marshal(call)
	if err != nil {
		return fmt.Errorf("mesos: encoding %s: %w", call.Type, err)
	}
	resp, err := c.post(ctx, schedulerPath, b, false)
	if err != nil {
		return fmt.Errorf("%s: %w", call.Type, err)
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %w", call.Type, readError(resp))
	}
	drain(resp)
	return nil
}

// Operator sends an operator API call (POST /api/v1); the response is
// decoded when the master sends one.
func (c *Client) Operator(ctx context.Context, call *master.Call) (*master.Response, error) {
	b, err := proto.Marshal(call)
	if err != nil {
		return nil, fmt.Errorf("mesos: encoding %s: %w", call.Type, err)
	}
	resp, err := c.post(ctx, operatorPath, b, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", call.Type, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("%s: %w", call.Type, readError(resp))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: reading the answer: %w", call.Type, err)
	}
	if len(body) == 0 {
		return nil, nil
	}
	var r master.Response
	if err := proto.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%s: decoding the answer: %w", call.Type, err)
	}
	return &r, nil
}
