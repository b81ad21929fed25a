package controlpb

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/runtime"
)

// Conversions between the engine's values and their wire form, used by
// both ends of a session.

// FromError carries err across the wire with the kinds the master's
// restore logic decides on; nil for nil.
func FromError(err error) *ErrorInfo {
	if err == nil {
		return nil
	}
	e := &ErrorInfo{Message: err.Error()}
	var before *runtime.RestoreBeforeError
	var refused *runtime.FallbackRefusedError
	switch {
	case errors.As(err, &before):
		e.Kind, e.Before, e.Reason = ErrorInfo_KIND_RESTORE_BEFORE, before.Before, before.Reason
	case errors.As(err, &refused):
		e.Kind, e.Node, e.Reason = ErrorInfo_KIND_FALLBACK_REFUSED, refused.Node, refused.Reason
	case errors.Is(err, checkpoint.ErrCorrupt):
		e.Kind = ErrorInfo_KIND_CORRUPT_STATE
	}
	return e
}

// Err is the error e carries, of the engine's type for its kind; nil for
// nil. Its message is the original one.
func (e *ErrorInfo) Err() error {
	if e == nil {
		return nil
	}
	switch e.Kind {
	case ErrorInfo_KIND_RESTORE_BEFORE:
		return &wireError{msg: e.Message, err: &runtime.RestoreBeforeError{Before: e.Before, Reason: e.Reason}}
	case ErrorInfo_KIND_FALLBACK_REFUSED:
		return &wireError{msg: e.Message, err: &runtime.FallbackRefusedError{Node: e.Node, Reason: e.Reason}}
	case ErrorInfo_KIND_CORRUPT_STATE:
		return &wireError{msg: e.Message, err: checkpoint.ErrCorrupt}
	}
	return errors.New(e.Message)
}

// wireError keeps the remote message and unwraps to the typed error.
type wireError struct {
	msg string
	err error
}

func (w *wireError) Error() string { return w.msg }
func (w *wireError) Unwrap() error { return w.err }

// FromStates encodes an acknowledgement's state handles.
func FromStates(states []runtime.NodeSubtaskState) ([]*NodeSubtaskState, error) {
	out := make([]*NodeSubtaskState, 0, len(states))
	for _, s := range states {
		b, err := json.Marshal(s.State)
		if err != nil {
			return nil, fmt.Errorf("encoding the state of %s: %w", s.Node, err)
		}
		out = append(out, &NodeSubtaskState{Node: s.Node, Parallelism: int32(s.Parallelism), StateJson: b})
	}
	return out, nil
}

// States decodes an acknowledgement's state handles.
func States(in []*NodeSubtaskState) ([]runtime.NodeSubtaskState, error) {
	out := make([]runtime.NodeSubtaskState, 0, len(in))
	for _, s := range in {
		var st checkpoint.SubtaskState
		if err := json.Unmarshal(s.StateJson, &st); err != nil {
			return nil, fmt.Errorf("decoding the state of %s: %w", s.Node, err)
		}
		out = append(out, runtime.NodeSubtaskState{Node: s.Node, Parallelism: int(s.Parallelism), State: st})
	}
	return out, nil
}

// FromTrigger and Trigger convert a checkpoint trigger.
func FromTrigger(attempt string, tr runtime.Trigger) *TriggerCheckpoint {
	return &TriggerCheckpoint{Attempt: attempt, Id: tr.ID, Savepoint: tr.Savepoint, Final: tr.Final, Stop: tr.Stop}
}

func (t *TriggerCheckpoint) Trigger() runtime.Trigger {
	return runtime.Trigger{ID: t.Id, Savepoint: t.Savepoint, Final: t.Final, Stop: t.Stop}
}
