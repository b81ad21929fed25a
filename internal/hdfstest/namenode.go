package hdfstest

import (
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
)

// namenode implements the ClientNamenodeProtocol methods colinmarc/hdfs
// calls. Every method runs under mu; changes are persisted before the
// response is sent.
type namenode struct {
	c    *Cluster
	file string // where the namespace is persisted

	mu sync.Mutex
	ns *namespace
}

// call is the context of one RPC call.
type call struct {
	user string
	host string // the client's address, for messages
}

type handler func(nn *namenode, cl *call, req fields) (msg, error)

// handlers maps ClientProtocol method names to their implementation.
var handlers = map[string]handler{
	"getFileInfo":            (*namenode).getFileInfo,
	"getServerDefaults":      (*namenode).getServerDefaults,
	"getFsStats":             (*namenode).getFsStats,
	"mkdirs":                 (*namenode).mkdirs,
	"create":                 (*namenode).create,
	"append":                 (*namenode).append,
	"addBlock":               (*namenode).addBlock,
	"updateBlockForPipeline": (*namenode).updateBlockForPipeline,
	"complete":               (*namenode).complete,
	"getBlockLocations":      (*namenode).getBlockLocations,
	"getListing":             (*namenode).getListing,
	"rename":                 (*namenode).rename,
	"rename2":                (*namenode).rename2,
	"delete":                 (*namenode).delete,
	"renewLease":             (*namenode).renewLease,
	"getContentSummary":      (*namenode).getContentSummary,
}

// mutating lists the methods after which the namespace is saved.
var mutating = map[string]bool{
	"mkdirs": true, "create": true, "append": true, "addBlock": true,
	"updateBlockForPipeline": true, "complete": true, "rename": true,
	"rename2": true, "delete": true,
}

func (nn *namenode) serve(cl *call, method string, req []byte) (msg, error) {
	h := handlers[method]
	if h == nil {
		return nil, rerr(excNoSuchMethod, "Unknown method %s called on org.apache.hadoop.hdfs.protocol.ClientProtocol protocol.", method)
	}
	fs, err := parse(req)
	if err != nil {
		return nil, rerr(excServer, "could not parse the %s request: %v", method, err)
	}
	nn.mu.Lock()
	defer nn.mu.Unlock()
	resp, err := h(nn, cl, fs)
	if err == nil && mutating[method] {
		if serr := nn.ns.save(nn.file); serr != nil {
			return nil, rerr(excIO, "persisting the namespace: %v", serr)
		}
	}
	return resp, err
}

func now() int64 { return time.Now().UnixMilli() }

// --- message builders ---

// fileStatus is an HdfsFileStatusProto.
func (nn *namenode) fileStatus(n *inode, name string) msg {
	typ := uint64(2) // IS_FILE
	if n.Dir {
		typ = 1 // IS_DIR
	}
	m := msg(nil).uint(1, typ).bytes(2, []byte(name)).uint(3, n.length()).
		msg(4, msg(nil).uint(1, uint64(n.Perm))).str(5, n.Owner).str(6, n.Group).
		uint(7, uint64(n.Mtime)).uint(8, uint64(n.Atime))
	if !n.Dir {
		m = m.uint(10, uint64(n.Replication)).uint(11, n.BlockSize)
	}
	m = m.uint(13, n.ID)
	if n.Dir {
		m = m.int(14, int64(len(n.Children)))
	}
	return m
}

func (nn *namenode) extendedBlock(b blockRef) msg {
	return msg(nil).str(1, nn.c.poolID).uint(2, b.ID).uint(3, b.GenStamp).uint(4, b.NumBytes)
}

// locatedBlock is a LocatedBlockProto placing b on the one datanode.
func (nn *namenode) locatedBlock(b blockRef, offset uint64) msg {
	token := msg(nil).bytes(1, nil).bytes(2, nil).str(3, "").str(4, "")
	return msg(nil).msg(1, nn.extendedBlock(b)).uint(2, offset).msg(3, nn.c.datanodeInfo(nn.usedBytes())).
		bool(4, false).msg(5, token).bytes(6, []byte{0}). // isCached, packed
		uint(7, 1).                                       // DISK
		str(8, nn.c.storageID)
}

func (nn *namenode) usedBytes() uint64 {
	var used uint64
	var visit func(n *inode)
	visit = func(n *inode) {
		used += n.length()
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(nn.ns.Root)
	return used
}

func parseBlock(fs fields) (blockRef, string) {
	return blockRef{ID: fs.uint(2), GenStamp: fs.uint(3), NumBytes: fs.uint(4)}, fs.str(1)
}

// --- lookups ---

func (nn *namenode) resolve(src string) ([]string, *inode, *inode, bool, error) {
	parts, err := splitPath(src)
	if err != nil {
		return nil, nil, nil, false, err
	}
	n, parent, ancestorFile := nn.ns.walk(parts)
	return parts, n, parent, ancestorFile, nil
}

// openFile finds the file a writer names by ID or path and checks its lease.
func (nn *namenode) openFile(src, client string, fileID uint64) (*inode, error) {
	var f *inode
	if fileID != 0 {
		f, _ = nn.ns.byID(fileID)
	} else {
		_, n, _, _, err := nn.resolve(src)
		if err != nil {
			return nil, err
		}
		f = n
	}
	if f == nil || f.Dir {
		return nil, rerr(excFileNotFound, "File does not exist: %s (inode %d) Holder %s does not have any open files.", src, fileID, client)
	}
	if f.Holder == "" {
		return nil, rerr(excLeaseExpired, "No lease on %s (inode %d): File is not open for writing. Holder %s does not have any open files.", src, f.ID, client)
	}
	if f.Holder != client {
		return nil, rerr(excLeaseExpired, "Client (=%s) is not the lease owner (=%s) of %s", client, f.Holder, src)
	}
	return f, nil
}

// recordLast records the length a writer reports for its last block.
func recordLast(f *inode, b blockRef, src string) error {
	if len(f.Blocks) == 0 || f.Blocks[len(f.Blocks)-1].ID != b.ID {
		return rerr(excIO, "block blk_%d is not the last block of %s", b.ID, src)
	}
	f.Blocks[len(f.Blocks)-1].NumBytes = b.NumBytes
	return nil
}

// --- ClientProtocol methods ---

func (nn *namenode) getFileInfo(_ *call, req fields) (msg, error) {
	if err := req.require("GetFileInfoRequestProto", 1); err != nil {
		return nil, err
	}
	_, n, _, _, err := nn.resolve(req.str(1))
	if err != nil {
		return nil, err
	}
	if n == nil {
		return msg{}, nil // no fs field: the path does not exist
	}
	return msg(nil).msg(1, nn.fileStatus(n, "")), nil
}

func (nn *namenode) getServerDefaults(*call, fields) (msg, error) {
	d := msg(nil).uint(1, uint64(nn.c.cfg.blockSize)).uint(2, bytesPerChecksum).uint(3, 64*1024).
		uint(4, 1).uint(5, 4096).bool(6, false).uint(7, 0).uint(8, 2) // CRC32C
	return msg(nil).msg(1, d), nil
}

func (nn *namenode) getFsStats(*call, fields) (msg, error) {
	used := nn.usedBytes()
	return msg(nil).uint(1, capacity).uint(2, used).uint(3, capacity-used).
		uint(4, 0).uint(5, 0).uint(6, 0).uint(7, 0).uint(8, 0).uint(9, 0), nil
}

// mkdirsAt creates the missing directories of parts.
func (nn *namenode) mkdirsAt(cl *call, parts []string, perm uint32) {
	n := nn.ns.Root
	t := now()
	for _, name := range parts {
		c := n.Children[name]
		if c == nil {
			c = &inode{ID: nn.ns.NextInode, Dir: true, Perm: perm, Owner: cl.user, Group: "supergroup", Mtime: t, Atime: t, Children: map[string]*inode{}}
			nn.ns.NextInode++
			n.Children[name] = c
			n.Mtime = t
		}
		n = c
	}
}

func (nn *namenode) mkdirs(cl *call, req fields) (msg, error) {
	if err := req.require("MkdirsRequestProto", 1, 2, 3); err != nil {
		return nil, err
	}
	src := req.str(1)
	masked, _ := req.msg(2)
	parts, n, parent, ancestorFile, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	switch {
	case ancestorFile:
		return nil, rerr(excParentNotDirectory, "Parent path is not a directory: %s", src)
	case n != nil && !n.Dir:
		return nil, rerr(excFileAlreadyExists, "Path is not a directory: %s", src)
	case n != nil:
		return msg(nil).bool(1, true), nil
	case parent == nil && !req.bool(3):
		return nil, rerr(excFileNotFound, "Parent directory doesn't exist: %s", path.Dir(src))
	}
	nn.mkdirsAt(cl, parts, uint32(masked.uint(1))&0o7777)
	return msg(nil).bool(1, true), nil
}

const (
	flagCreate    = 0x01
	flagOverwrite = 0x02
	flagNewBlock  = 0x20
)

func (nn *namenode) create(cl *call, req fields) (msg, error) {
	if err := req.require("CreateRequestProto", 1, 2, 3, 4, 5, 6, 7); err != nil {
		return nil, err
	}
	src, client, flag := req.str(1), req.str(3), req.uint(4)
	masked, _ := req.msg(2)
	blockSize, replication := req.uint(7), req.uint(6)
	parts, n, parent, ancestorFile, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	switch {
	case len(parts) == 0:
		return nil, rerr(excFileAlreadyExists, "/ already exists as a directory")
	case ancestorFile:
		return nil, rerr(excParentNotDirectory, "Parent path is not a directory: %s", src)
	case blockSize == 0 || blockSize%bytesPerChecksum != 0:
		return nil, rerr(excIO, "Invalid block size %d: must be a positive multiple of %d", blockSize, bytesPerChecksum)
	case replication == 0 || replication > 512:
		return nil, rerr(excIO, "Requested replication factor of %d is invalid", replication)
	}
	if n != nil {
		switch {
		case n.Dir:
			return nil, rerr(excFileAlreadyExists, "%s already exists as a directory", src)
		case n.Holder != "" && n.Holder != client:
			return nil, rerr(excAlreadyBeing, "Failed to CREATE_FILE %s for %s on %s because this file lease is currently owned by %s", src, client, cl.host, n.Holder)
		case flag&flagOverwrite == 0:
			return nil, rerr(excFileAlreadyExists, "%s for client %s already exists", src, cl.host)
		}
		nn.c.dn.removeBlocks(blocksUnder(n, nil))
		delete(parent.Children, parts[len(parts)-1])
	} else if flag&flagCreate == 0 {
		return nil, rerr(excFileNotFound, "Can't overwrite non-existent %s for client %s", src, cl.host)
	}
	if parent == nil {
		if !req.bool(5) {
			return nil, rerr(excFileNotFound, "Parent directory doesn't exist: %s", path.Dir(src))
		}
		nn.mkdirsAt(cl, parts[:len(parts)-1], 0o755)
		_, parent, _ = nn.ns.walk(parts)
	}
	t := now()
	f := &inode{
		ID: nn.ns.NextInode, Perm: uint32(masked.uint(1)) & 0o7777, Owner: cl.user, Group: "supergroup",
		Mtime: t, Atime: t, Replication: uint32(replication), BlockSize: blockSize, Holder: client,
	}
	nn.ns.NextInode++
	parent.Children[parts[len(parts)-1]] = f
	parent.Mtime = t
	return msg(nil).msg(1, nn.fileStatus(f, "")), nil
}

func (nn *namenode) append(cl *call, req fields) (msg, error) {
	if err := req.require("AppendRequestProto", 1, 2); err != nil {
		return nil, err
	}
	src, client := req.str(1), req.str(2)
	_, f, _, _, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	switch {
	case f == nil:
		return nil, rerr(excFileNotFound, "Failed to append to non-existent file %s for client %s", src, cl.host)
	case f.Dir:
		return nil, rerr(excFileNotFound, "Failed to append to non-file %s for client %s", src, cl.host)
	case f.Holder != "":
		return nil, rerr(excAlreadyBeing, "Failed to APPEND_FILE %s for %s on %s because this file lease is currently owned by %s", src, client, cl.host, f.Holder)
	}
	f.Holder = client
	resp := msg(nil)
	if len(f.Blocks) > 0 && req.uint(3)&flagNewBlock == 0 {
		last := f.Blocks[len(f.Blocks)-1]
		if last.NumBytes < f.BlockSize {
			resp = resp.msg(1, nn.locatedBlock(last, f.length()-last.NumBytes))
		}
	}
	return resp.msg(2, nn.fileStatus(f, "")), nil
}

func (nn *namenode) addBlock(_ *call, req fields) (msg, error) {
	if err := req.require("AddBlockRequestProto", 1, 2); err != nil {
		return nil, err
	}
	src, client := req.str(1), req.str(2)
	f, err := nn.openFile(src, client, req.uint(5))
	if err != nil {
		return nil, err
	}
	if prev, err := req.msg(3); err != nil {
		return nil, rerr(excServer, "bad previous block: %v", err)
	} else if prev != nil {
		b, _ := parseBlock(prev)
		if err := recordLast(f, b, src); err != nil {
			return nil, err
		}
		if l, ok := nn.c.dn.finalizedLen(b.ID); !ok || uint64(l) != b.NumBytes {
			return nil, rerr(excIO, "block blk_%d of %s is not complete on the datanode (%d of %d bytes)", b.ID, src, l, b.NumBytes)
		}
	} else if len(f.Blocks) > 0 {
		return nil, rerr(excIO, "addBlock for %s names no previous block but the file has %d", src, len(f.Blocks))
	}
	off := f.length()
	b := blockRef{ID: nn.ns.NextBlock, GenStamp: nn.ns.GenStamp}
	nn.ns.NextBlock++
	nn.ns.GenStamp++
	f.Blocks = append(f.Blocks, b)
	return msg(nil).msg(1, nn.locatedBlock(b, off)), nil
}

func (nn *namenode) updateBlockForPipeline(_ *call, req fields) (msg, error) {
	if err := req.require("UpdateBlockForPipelineRequestProto", 1, 2); err != nil {
		return nil, err
	}
	bf, err := req.msg(1)
	if err != nil {
		return nil, rerr(excServer, "bad block: %v", err)
	}
	b, _ := parseBlock(bf)
	f := nn.ns.fileOfBlock(b.ID)
	if f == nil || f.Holder == "" {
		return nil, rerr(excIO, "blk_%d does not belong to a file under construction", b.ID)
	}
	if f.Holder != req.str(2) {
		return nil, rerr(excLeaseExpired, "Client %s is not the lease owner of blk_%d", req.str(2), b.ID)
	}
	var off uint64
	for i, fb := range f.Blocks {
		if fb.ID == b.ID {
			f.Blocks[i].NumBytes = b.NumBytes
			return msg(nil).msg(1, nn.locatedBlock(f.Blocks[i], off)), nil
		}
		off += fb.NumBytes
	}
	return nil, rerr(excIO, "blk_%d not found", b.ID)
}

func (nn *namenode) complete(_ *call, req fields) (msg, error) {
	if err := req.require("CompleteRequestProto", 1, 2); err != nil {
		return nil, err
	}
	src, client := req.str(1), req.str(2)
	var f *inode
	if id := req.uint(4); id != 0 {
		f, _ = nn.ns.byID(id)
	} else {
		_, f, _, _, _ = nn.resolve(src)
	}
	if f != nil && !f.Dir && f.Holder == "" {
		return msg(nil).bool(1, true), nil // a retried complete
	}
	f, err := nn.openFile(src, client, req.uint(4))
	if err != nil {
		return nil, err
	}
	if last, err := req.msg(3); err != nil {
		return nil, rerr(excServer, "bad last block: %v", err)
	} else if last != nil {
		b, _ := parseBlock(last)
		if err := recordLast(f, b, src); err != nil {
			return nil, err
		}
	}
	for _, b := range f.Blocks {
		l, ok := nn.c.dn.finalizedLen(b.ID)
		if !ok {
			return msg(nil).bool(1, false), nil // not yet minimally replicated
		}
		if uint64(l) != b.NumBytes {
			return nil, rerr(excIO, "blk_%d of %s: the client reports %d bytes, the datanode has %d", b.ID, src, b.NumBytes, l)
		}
	}
	f.Holder = ""
	f.Mtime = now()
	return msg(nil).bool(1, true), nil
}

func (nn *namenode) getBlockLocations(_ *call, req fields) (msg, error) {
	if err := req.require("GetBlockLocationsRequestProto", 1, 2, 3); err != nil {
		return nil, err
	}
	src, off, length := req.str(1), req.uint(2), req.uint(3)
	_, f, _, _, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, rerr(excFileNotFound, "File does not exist: %s", src)
	}
	if f.Dir {
		return nil, rerr(excFileNotFound, "Path is not a file: %s", src)
	}
	lbs := msg(nil).uint(1, f.length())
	var pos uint64
	for _, b := range f.Blocks {
		if pos+b.NumBytes > off && pos < off+length {
			lbs = lbs.msg(2, nn.locatedBlock(b, pos))
		}
		pos += b.NumBytes
	}
	lbs = lbs.bool(3, f.Holder != "")
	if n := len(f.Blocks); n > 0 {
		last := f.Blocks[n-1]
		lbs = lbs.msg(4, nn.locatedBlock(last, f.length()-last.NumBytes))
	}
	lbs = lbs.bool(5, f.Holder == "") // isLastBlockComplete
	return msg(nil).msg(1, lbs), nil
}

func (nn *namenode) getListing(_ *call, req fields) (msg, error) {
	if err := req.require("GetListingRequestProto", 1, 2, 3); err != nil {
		return nil, err
	}
	_, n, _, _, err := nn.resolve(req.str(1))
	if err != nil {
		return nil, err
	}
	if n == nil {
		return msg{}, nil // no dirList: the path does not exist
	}
	list := msg(nil)
	if !n.Dir {
		return msg(nil).msg(1, list.msg(1, nn.fileStatus(n, "")).uint(2, 0)), nil
	}
	after := string(req.bytes(2))
	names := n.sortedNames()
	i := 0
	for i < len(names) && names[i] <= after {
		i++
	}
	names = names[i:]
	count := min(len(names), nn.c.cfg.listLimit)
	for _, name := range names[:count] {
		list = list.msg(1, nn.fileStatus(n.Children[name], name))
	}
	list = list.uint(2, uint64(len(names)-count))
	return msg(nil).msg(1, list), nil
}

// move moves the inode at from to the (missing) path to.
func (nn *namenode) move(from, to []string) {
	_, fromParent, _ := nn.ns.walk(from)
	_, toParent, _ := nn.ns.walk(to)
	n := fromParent.Children[from[len(from)-1]]
	delete(fromParent.Children, from[len(from)-1])
	toParent.Children[to[len(to)-1]] = n
	t := now()
	fromParent.Mtime, toParent.Mtime = t, t
}

func (nn *namenode) rename2(_ *call, req fields) (msg, error) {
	if err := req.require("Rename2RequestProto", 1, 2, 3); err != nil {
		return nil, err
	}
	src, dst, overwrite := req.str(1), req.str(2), req.bool(3)
	sp, sn, _, _, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	dp, dn, dparent, dAncestorFile, err := nn.resolve(dst)
	if err != nil {
		return nil, err
	}
	switch {
	case sn == nil:
		return nil, rerr(excFileNotFound, "rename source %s is not found.", src)
	case len(sp) == 0:
		return nil, rerr(excIO, "rename source cannot be the root")
	case strings.Join(sp, "/") == strings.Join(dp, "/"):
		return nil, rerr(excFileAlreadyExists, "The source %s and destination %s are the same", src, dst)
	case isUnder(dp, sp):
		return nil, rerr(excIO, "Rename destination %s is a directory or file under source %s", dst, src)
	case len(dp) == 0:
		return nil, rerr(excIO, "rename destination cannot be the root")
	case dAncestorFile:
		return nil, rerr(excParentNotDirectory, "rename destination parent %s is a file.", path.Dir(dst))
	case dparent == nil:
		return nil, rerr(excFileNotFound, "rename destination parent %s not found.", path.Dir(dst))
	}
	if dn != nil {
		switch {
		case !overwrite:
			return nil, rerr(excFileAlreadyExists, "rename destination %s already exists.", dst)
		case dn.Dir && !sn.Dir:
			return nil, rerr(excIO, "Source %s is not a directory but destination %s is", src, dst)
		case !dn.Dir && sn.Dir:
			return nil, rerr(excIO, "Source %s is a directory but destination %s is not", src, dst)
		case dn.Dir && len(dn.Children) > 0:
			return nil, rerr(excIO, "rename destination directory is not empty: %s", dst)
		}
		nn.c.dn.removeBlocks(blocksUnder(dn, nil))
		delete(dparent.Children, dp[len(dp)-1])
	}
	nn.move(sp, dp)
	return msg{}, nil
}

// rename is the old rename: it moves into an existing directory and
// reports most failures as false.
func (nn *namenode) rename(_ *call, req fields) (msg, error) {
	if err := req.require("RenameRequestProto", 1, 2); err != nil {
		return nil, err
	}
	src, dst := req.str(1), req.str(2)
	sp, sn, _, _, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	dp, dn, dparent, _, err := nn.resolve(dst)
	if err != nil {
		return nil, err
	}
	if dn != nil && dn.Dir {
		dp = append(dp, sp[len(sp)-1])
		dn, dparent, _ = nn.ns.walk(dp)
	}
	if sn == nil || len(sp) == 0 || dn != nil || dparent == nil || isUnder(dp, sp) {
		return msg(nil).bool(1, false), nil
	}
	nn.move(sp, dp)
	return msg(nil).bool(1, true), nil
}

func (nn *namenode) delete(_ *call, req fields) (msg, error) {
	if err := req.require("DeleteRequestProto", 1, 2); err != nil {
		return nil, err
	}
	src := req.str(1)
	parts, n, parent, _, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	if n == nil || len(parts) == 0 {
		return msg(nil).bool(1, false), nil
	}
	if n.Dir && len(n.Children) > 0 && !req.bool(2) {
		return nil, rerr(excPathNotEmptyDir, "`%s is non empty': Directory is not empty", src)
	}
	nn.c.dn.removeBlocks(blocksUnder(n, nil))
	delete(parent.Children, parts[len(parts)-1])
	parent.Mtime = now()
	return msg(nil).bool(1, true), nil
}

func (nn *namenode) renewLease(_ *call, req fields) (msg, error) {
	if err := req.require("RenewLeaseRequestProto", 1); err != nil {
		return nil, err
	}
	return msg{}, nil
}

func (nn *namenode) getContentSummary(_ *call, req fields) (msg, error) {
	if err := req.require("GetContentSummaryRequestProto", 1); err != nil {
		return nil, err
	}
	src := req.str(1)
	_, n, _, _, err := nn.resolve(src)
	if err != nil {
		return nil, err
	}
	if n == nil {
		return nil, rerr(excFileNotFound, "File does not exist: %s", src)
	}
	var length, files, dirs, space uint64
	var visit func(n *inode)
	visit = func(n *inode) {
		if n.Dir {
			dirs++
		} else {
			files++
			length += n.length()
			space += n.length() * uint64(n.Replication)
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(n)
	noQuota := ^uint64(0) // -1
	s := msg(nil).uint(1, length).uint(2, files).uint(3, dirs).uint(4, noQuota).uint(5, space).uint(6, noQuota)
	return msg(nil).msg(1, s), nil
}

func (nn *namenode) String() string { return fmt.Sprintf("namenode %s", nn.c.nnAddr) }
