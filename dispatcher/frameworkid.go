package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sluice-stream/sluice/engine/fs"
)

// The Mesos launcher's files in the job store, beside the store's own:
//
//	mesos-framework-id                   the dispatcher's Mesos framework ID
//	jobs/<id>/runs/<n>/mesos-master-task the Mesos task ID of run n's newest master

// FrameworkIDStore keeps the dispatcher's Mesos framework ID in the job
// store (it implements framework/mesos.IDStore): a dispatcher started
// again subscribes with it and finds its masters' tasks still running.
type FrameworkIDStore struct{ s *Store }

// FrameworkIDs is the store's keeper of the dispatcher's framework ID.
func (s *Store) FrameworkIDs() *FrameworkIDStore { return &FrameworkIDStore{s: s} }

func (f *FrameworkIDStore) path() string { return fs.Join(f.s.dir, "mesos-framework-id") }

// Load is the kept ID, "" when none.
func (f *FrameworkIDStore) Load(ctx context.Context) (string, error) {
	b, err := f.s.fs.ReadFile(ctx, f.path())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", storeErr("reading the Mesos framework ID", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Save keeps id.
func (f *FrameworkIDStore) Save(ctx context.Context, id string) error {
	if err := f.s.fs.WriteFile(ctx, f.path(), []byte(id+"\n")); err != nil {
		return storeErr("keeping the Mesos framework ID", err)
	}
	return nil
}

// Clear forgets the ID (Mesos removed the framework).
func (f *FrameworkIDStore) Clear(ctx context.Context) error {
	if err := f.s.fs.RemoveAll(ctx, f.path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return storeErr("clearing the Mesos framework ID", err)
	}
	return nil
}

// SpecURI is the URI of job id's stored spec, for a master that reads it
// from the store (a Mesos task on any agent).
func (s *Store) SpecURI(id string) string { return fs.URI(s.fs, fs.Join(s.jobDir(id), "spec")) }

// SpecURIOf is the URI of the spec a run uses: the submitted one (specRun
// 0) or the one an upgrade stored for run specRun.
func (s *Store) SpecURIOf(id string, specRun int) string {
	if specRun > 0 {
		return fs.URI(s.fs, s.runSpecPath(id, specRun))
	}
	return s.SpecURI(id)
}

func (s *Store) masterTaskPath(id string, run int) string {
	return fs.Join(s.jobDir(id), "runs", strconv.Itoa(run), "mesos-master-task")
}

// saveMasterTask records the Mesos task ID of run's newest master.
func (s *Store) saveMasterTask(ctx context.Context, id string, run int, task string) error {
	if err := s.fs.WriteFile(ctx, s.masterTaskPath(id, run), []byte(task+"\n")); err != nil {
		return storeErr(fmt.Sprintf("recording the master task of job %s run %d", id, run), err)
	}
	return nil
}

// masterTask is the Mesos task ID of run's newest master, "" when none
// was recorded.
func (s *Store) masterTask(ctx context.Context, id string, run int) (string, error) {
	b, err := s.fs.ReadFile(ctx, s.masterTaskPath(id, run))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", storeErr(fmt.Sprintf("reading the master task of job %s run %d", id, run), err)
	}
	return strings.TrimSpace(string(b)), nil
}
