package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// masterStatus is the part of a master's GET /v1/status the dispatcher
// reads (docs/rest-api.md).
type masterStatus struct {
	Job      string `json:"job"`
	State    string `json:"state"` // running | restarting
	Restarts int    `json:"restarts"`
}

// TaskManager is one of a master's TaskManagers (GET /v1/taskmanagers).
type TaskManager struct {
	ID          string   `json:"id"`
	ResourceID  string   `json:"resourceId"`
	Host        string   `json:"host,omitempty"`
	DataAddress string   `json:"dataAddress,omitempty"`
	Slots       int      `json:"slots"`
	Tasks       []string `json:"tasks"`
}

// apiError is an answer of a master that was not a 2xx: its status and
// body are passed on as they are.
type apiError struct {
	code int
	body []byte
}

func (e *apiError) Error() string {
	var r struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(e.body, &r) == nil && r.Error != "" {
		return fmt.Sprintf("master answered %d: %s", e.code, r.Error)
	}
	return fmt.Sprintf("master answered %d", e.code)
}

// errNoMaster: the job has no master whose API answers.
var errNoMaster = errors.New("the job's master is not running")

// callMaster calls the master's REST API at addr and decodes a 2xx answer
// into out (when not nil); other answers are an *apiError.
func callMaster(ctx context.Context, c *http.Client, addr, method, path string, out any) ([]byte, error) {
	if addr == "" {
		return nil, errNoMaster
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoMaster, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the master's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return b, &apiError{code: resp.StatusCode, body: bytes.TrimSpace(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return b, fmt.Errorf("decoding the master's answer to %s %s: %w", method, path, err)
		}
	}
	return b, nil
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
