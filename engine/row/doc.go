// Package row defines Sluice's typed rows: schemas, columnar batches and the
// one binary codec used for snapshots and (later) the network. Rows never
// travel alone: operators receive and emit *Batch values so that the hot path
// does one channel operation and no allocation per record.
package row
