// Package hdfstest runs an HDFS namenode and datanode in-process, written in
// Go, for tests: no HDFS can be installed where Sluice is built, so tests of
// the hdfs:// filesystem talk to this cluster through the real client
// library (github.com/colinmarc/hdfs/v2) over TCP with the real protocols:
//
//   - Hadoop RPC version 9 to the namenode: the "hrpc" connection header,
//     IpcConnectionContextProto, RpcRequestHeaderProto/RequestHeaderProto/
//     RpcResponseHeaderProto framing with varint-delimited messages, errors
//     as responses with status ERROR and the Java exception class
//     (java.io.FileNotFoundException, org.apache.hadoop.fs.
//     FileAlreadyExistsException, …) that clients map to os.ErrNotExist,
//     os.ErrExist and so on, FATAL responses and a closed connection for
//     framing errors;
//   - the ClientNamenodeProtocol methods getFileInfo, getServerDefaults,
//     getFsStats, mkdirs, create, append, addBlock, updateBlockForPipeline,
//     complete, getBlockLocations, getListing, rename, rename2, delete,
//     renewLease and getContentSummary;
//   - the data transfer protocol (version 28) to the datanode: writeBlock
//     (stages PIPELINE_SETUP_CREATE and PIPELINE_SETUP_APPEND) and readBlock,
//     with BlockOpResponseProto, PacketHeaderProto, packets carrying CRC32C
//     chunk checksums (verified on write) and pipeline acks.
//
// The protobuf messages are built and parsed with protowire from the field
// numbers of Hadoop's protocol definitions; no generated code is used.
//
// Start persists the namespace (namespace.json) and the blocks (data/) under
// a directory; Stop and Restart, on the same ports, simulate an outage.
// Files span several blocks; the block size is an option (1 MiB by default).
//
// Limits: one datanode (no replication: pipelines have one node, the
// replication factor is recorded but not honoured), no HA or standby
// namenode, simple authentication only (no Kerberos, SASL, block tokens or
// encrypted transfer), no permission checks, no quotas, snapshots, ACLs,
// xattrs, symlinks or truncate, leases never expire, and pipeline recovery
// is not implemented (a failed write fails). Blocks of deleted files are
// removed at once. It is meant for tests on loopback, not for data.
package hdfstest
