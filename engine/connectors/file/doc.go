// Package file is the file connector: the "file" source (JSON lines; a
// file, a directory or a glob, read from recorded offsets) and the "file"
// sink (part files: at-least-once, or exactly-once by two-phase commit of
// in-progress files renamed when their checkpoint completes). Both go
// through engine/fs, so any URI it serves (file://, hdfs://) works.
// It registers both in engine/nodes; engine/plan imports it.
package file
