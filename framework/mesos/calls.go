package mesos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	mesos "github.com/mesos/mesos-go/api/v1/lib"
	"github.com/mesos/mesos-go/api/v1/lib/master"
	"github.com/mesos/mesos-go/api/v1/lib/quota"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler"
	"github.com/mesos/mesos-go/api/v1/lib/scheduler/calls"

	"github.com/sluice-stream/sluice/engine/fs"
)

// FrameworkOptions is what a SUBSCRIBE says about the framework.
type FrameworkOptions struct {
	Name            string
	User            string
	Role            string
	Principal       string
	FailoverTimeout time.Duration
	Hostname        string
	WebUIURL        string
}

// SubscribeCall builds SUBSCRIBE: the job's role with MULTI_ROLE,
// PARTITION_AWARE (TASK_UNREACHABLE instead of TASK_LOST for a task whose
// agent may return), TASK_KILLING_STATE, checkpointing (tasks survive an
// agent restart) and a failover timeout. With an id it re-subscribes
// that framework: Mesos wants the id both at the top level and in
// framework_info. suppressed lists the roles to subscribe suppressed.
func SubscribeCall(o FrameworkOptions, frameworkID string, suppressed bool) *scheduler.Call {
	info := &mesos.FrameworkInfo{
		User:            o.User,
		Name:            o.Name,
		Roles:           []string{o.Role},
		FailoverTimeout: ptr(o.FailoverTimeout.Seconds()),
		Checkpoint:      ptr(true),
		Capabilities: []mesos.FrameworkInfo_Capability{
			{Type: mesos.FrameworkInfo_Capability_MULTI_ROLE},
			{Type: mesos.FrameworkInfo_Capability_PARTITION_AWARE},
			{Type: mesos.FrameworkInfo_Capability_TASK_KILLING_STATE},
		},
	}
	if o.Principal != "" {
		info.Principal = ptr(o.Principal)
	}
	if o.Hostname != "" {
		info.Hostname = ptr(o.Hostname)
	}
	if o.WebUIURL != "" {
		info.WebUiURL = ptr(o.WebUIURL)
	}
	call := calls.Subscribe(info).With(calls.SubscribeTo(frameworkID))
	if suppressed {
		call.Subscribe.SuppressedRoles = []string{o.Role}
	}
	return call
}

// TeardownCall ends the framework on Mesos: its tasks are killed and its
// id cannot subscribe again. (mesos-go has no builder for it.)
func TeardownCall(frameworkID string) *scheduler.Call {
	return &scheduler.Call{Type: scheduler.Call_TEARDOWN, FrameworkID: &mesos.FrameworkID{Value: frameworkID}}
}

// UpdateQuotaCall sets a role's guarantees and limits (operator API;
// scalar resources by name, e.g. "cpus", "mem"). Empty maps reset the
// role's quota. (mesos-go has no builder for it.)
func UpdateQuotaCall(role string, guarantees, limits map[string]float64, force bool) *master.Call {
	cfg := quota.QuotaConfig{Role: role}
	if len(guarantees) > 0 {
		cfg.Guarantees = map[string]mesos.Value_Scalar{}
		for k, v := range guarantees {
			cfg.Guarantees[k] = mesos.Value_Scalar{Value: v}
		}
	}
	if len(limits) > 0 {
		cfg.Limits = map[string]mesos.Value_Scalar{}
		for k, v := range limits {
			cfg.Limits[k] = mesos.Value_Scalar{Value: v}
		}
	}
	return &master.Call{Type: master.Call_UPDATE_QUOTA, UpdateQuota: &master.Call_UpdateQuota{
		Force: ptr(force), QuotaConfigs: []quota.QuotaConfig{cfg}}}
}

// UpdateQuota sets role's quota on the master.
func (c *Client) UpdateQuota(ctx context.Context, role string, guarantees, limits map[string]float64, force bool) error {
	_, err := c.Operator(ctx, UpdateQuotaCall(role, guarantees, limits, force))
	return err
}

// Quota is role's quota on the master: its guarantees and its limits (name →
// value; nil when the role has none of either).
func (c *Client) Quota(ctx context.Context, role string) (guarantees, limits map[string]float64, err error) {
	r, err := c.Operator(ctx, &master.Call{Type: master.Call_GET_QUOTA})
	if err != nil {
		return nil, nil, err
	}
	if r == nil || r.GetQuota == nil {
		return nil, nil, errors.New("GET_QUOTA: the master sent no quota")
	}
	scalars := func(m map[string]mesos.Value_Scalar) map[string]float64 {
		if len(m) == 0 {
			return nil
		}
		out := make(map[string]float64, len(m))
		for k, v := range m {
			out[k] = v.Value
		}
		return out
	}
	for _, cfg := range r.GetQuota.Status.Configs {
		// A role whose quota was reset stays listed, without either.
		if cfg.Role == role {
			return scalars(cfg.Guarantees), scalars(cfg.Limits), nil
		}
	}
	return nil, nil, nil
}

// QuotaLimits are role's quota limits (name → value; nil: no limit).
func (c *Client) QuotaLimits(ctx context.Context, role string) (map[string]float64, error) {
	_, limits, err := c.Quota(ctx, role)
	return limits, err
}

// QuotaAllows is how many TaskManagers of prof fit in limits (-1: no
// limit bears on the profile).
func QuotaAllows(limits map[string]float64, prof Profile) int {
	n := -1
	for name, want := range map[string]float64{"cpus": prof.CPUs, "mem": prof.MemMB, "disk": prof.DiskMB} {
		lim, ok := limits[name]
		if !ok || want <= 0 {
			continue
		}
		k := int(math.Floor(float64(milli(lim)) / float64(milli(want))))
		if n < 0 || k < n {
			n = k
		}
	}
	return n
}

func formatLimits(limits map[string]float64) string {
	var parts []string
	for k, v := range limits {
		parts = append(parts, fmt.Sprintf("%s:%g", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func ptr[T any](v T) *T { return &v }

// IDStore keeps the framework ID across restarts of the framework master.
type IDStore interface {
	Load(ctx context.Context) (string, error) // "" when none
	Save(ctx context.Context, id string) error
	Clear(ctx context.Context) error
}

// HAStore keeps the framework ID in the job's HA directory (file:// or
// hdfs://, through engine/fs as the rest of the HA metadata), in
// mesos-framework-id.
type HAStore struct {
	fs   fs.FS
	path string
	uri  string
}

// OpenHAStore opens the HA directory at uri.
func OpenHAStore(uri string) (*HAStore, error) {
	f, dir, err := fs.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("HA directory %s: %w", uri, err)
	}
	return &HAStore{fs: f, path: fs.Join(dir, "mesos-framework-id"), uri: uri}, nil
}

func (s *HAStore) Load(ctx context.Context) (string, error) {
	b, err := s.fs.ReadFile(ctx, s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("HA directory %s: reading the Mesos framework ID: %w", s.uri, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (s *HAStore) Save(ctx context.Context, id string) error {
	if err := s.fs.WriteFile(ctx, s.path, []byte(id+"\n")); err != nil {
		return fmt.Errorf("HA directory %s: keeping the Mesos framework ID: %w", s.uri, err)
	}
	return nil
}

func (s *HAStore) Clear(ctx context.Context) error {
	if err := s.fs.RemoveAll(ctx, s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("HA directory %s: clearing the Mesos framework ID: %w", s.uri, err)
	}
	return nil
}
