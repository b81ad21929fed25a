package kafka

import "github.com/sluice-stream/sluice/engine/runtime"

// SetKafkaBeforeCommit installs a hook run before an exactly-once kafka
// sink commits at CheckpointComplete (an error: a crash between pre-commit
// and commit) and returns the function that removes it.
func SetKafkaBeforeCommit(f func(ctx *runtime.Context, id int64) error) (undo func()) {
	kafkaBeforeCommit = f
	return func() { kafkaBeforeCommit = nil }
}
