// Package kafka is the Kafka connector (github.com/IBM/sarama): the "kafka"
// source (partitions split over subtasks, offsets kept in checkpoints,
// discovery, skip backlog, offset reset policy) and the "kafka" sink
// (at-least-once, flushed on each checkpoint; exactly-once, a transaction
// per checkpoint committed when it completes), over one or two clusters.
// It registers both in engine/nodes; engine/plan imports it.
//
// It is not the place for Kafka-agnostic logic: rows, expressions and the
// runtime's checkpoint protocol live in engine/row, engine/expr and
// engine/runtime.
package kafka
