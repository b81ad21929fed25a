package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-stream/sluice/engine/fs"
)

// MasterInfo is what a framework master publishes in its HA directory
// (masters/<epoch>, written by framework.HA.Publish).
type MasterInfo struct {
	Epoch   int64     `json:"epoch"`
	Control string    `json:"control"`
	HTTP    string    `json:"http,omitempty"`
	Host    string    `json:"host,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Started time.Time `json:"started"`
}

// CheckpointPointer is a run's latest completed checkpoint
// (checkpoint.json, written by framework.HA.SaveCheckpoint).
type CheckpointPointer struct {
	Epoch int64  `json:"epoch"`
	ID    int64  `json:"id"`
	Path  string `json:"path"`
}

// Leader reads the newest master that published itself in the HA
// directory at uri; nil when none has.
func Leader(ctx context.Context, uri string) (*MasterInfo, error) {
	f, dir, err := fs.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	es, err := f.List(ctx, fs.Join(dir, "masters"))
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	var newest string
	var n int64
	for _, e := range es {
		if v, err := strconv.ParseInt(e.Name, 10, 64); err == nil && v > n {
			n, newest = v, e.Name
		}
	}
	if newest == "" {
		return nil, nil
	}
	b, err := f.ReadFile(ctx, fs.Join(dir, "masters", newest))
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	var info MasterInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("HA directory %s: masters/%s: %w", uri, newest, err)
	}
	return &info, nil
}

// LatestCheckpoint reads the run's latest completed checkpoint; nil when
// none is recorded.
func LatestCheckpoint(ctx context.Context, uri string) (*CheckpointPointer, error) {
	f, dir, err := fs.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	b, err := f.ReadFile(ctx, fs.Join(dir, "checkpoint.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	var p CheckpointPointer
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("HA directory %s: checkpoint.json: %w", uri, err)
	}
	return &p, nil
}
