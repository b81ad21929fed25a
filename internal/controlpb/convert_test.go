package controlpb_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/sluice-stream/sluice/engine/checkpoint"
	"github.com/sluice-stream/sluice/engine/runtime"
	pb "github.com/sluice-stream/sluice/internal/controlpb"
)

func TestErrorKindsCrossTheWire(t *testing.T) {
	var before *runtime.RestoreBeforeError
	err := pb.FromError(fmt.Errorf("opening out#0: %w", &runtime.RestoreBeforeError{Before: 7, Reason: "aborted"})).Err()
	if !errors.As(err, &before) || before.Before != 7 || err.Error() != "opening out#0: restore from a checkpoint before 7: aborted" {
		t.Errorf("restore-before: %v", err)
	}
	var refused *runtime.FallbackRefusedError
	if err := pb.FromError(&runtime.FallbackRefusedError{Node: "out", Reason: "r"}).Err(); !errors.As(err, &refused) || refused.Node != "out" {
		t.Errorf("refused: %v", err)
	}
	if err := pb.FromError(fmt.Errorf("x: %w", checkpoint.ErrCorrupt)).Err(); !errors.Is(err, checkpoint.ErrCorrupt) {
		t.Errorf("corrupt: %v", err)
	}
	if err := pb.FromError(errors.New("plain")).Err(); err.Error() != "plain" {
		t.Errorf("plain: %v", err)
	}
	if pb.FromError(nil) != nil || (*pb.ErrorInfo)(nil).Err() != nil {
		t.Error("nil does not round-trip")
	}
}
