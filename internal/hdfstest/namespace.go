package hdfstest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Java exception classes the namenode reports; colinmarc/hdfs maps the
// first four to os.ErrNotExist, os.ErrExist, syscall.ENOTEMPTY and
// os.ErrExist.
const (
	excFileNotFound       = "java.io.FileNotFoundException"
	excFileAlreadyExists  = "org.apache.hadoop.fs.FileAlreadyExistsException"
	excPathNotEmptyDir    = "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException"
	excAlreadyBeing       = "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException"
	excParentNotDirectory = "org.apache.hadoop.fs.ParentNotDirectoryException"
	excInvalidPath        = "org.apache.hadoop.fs.InvalidPathException"
	excLeaseExpired       = "org.apache.hadoop.hdfs.server.namenode.LeaseExpiredException"
	excIO                 = "java.io.IOException"
	excUnsupported        = "java.lang.UnsupportedOperationException"
	excNoSuchMethod       = "org.apache.hadoop.ipc.RpcNoSuchMethodException"
	excNoSuchProtocol     = "org.apache.hadoop.ipc.RpcNoSuchProtocolException"
	excServer             = "org.apache.hadoop.ipc.RpcServerException"
	excVersionMismatch    = "org.apache.hadoop.ipc.RPC$VersionMismatch"
	excAccessControl      = "org.apache.hadoop.security.AccessControlException"
)

// remoteError is an exception thrown by a ClientProtocol method; it goes
// back as an RpcResponseHeader with status ERROR.
type remoteError struct{ class, msg string }

func (e *remoteError) Error() string { return e.class + ": " + e.msg }

func rerr(class, format string, args ...any) error {
	return &remoteError{class: class, msg: fmt.Sprintf(format, args...)}
}

// inode is a file or directory of the namespace. The namespace is persisted
// as JSON, whole, after every change.
type inode struct {
	ID       uint64            `json:"id"`
	Dir      bool              `json:"dir,omitempty"`
	Perm     uint32            `json:"perm"`
	Owner    string            `json:"owner"`
	Group    string            `json:"group"`
	Mtime    int64             `json:"mtime"` // ms since the epoch
	Atime    int64             `json:"atime"`
	Children map[string]*inode `json:"children,omitempty"`

	Replication uint32     `json:"replication,omitempty"`
	BlockSize   uint64     `json:"blockSize,omitempty"`
	Blocks      []blockRef `json:"blocks,omitempty"`
	// Holder is the client writing the file (its lease); empty once the
	// file is complete.
	Holder string `json:"holder,omitempty"`
}

type blockRef struct {
	ID       uint64 `json:"id"`
	GenStamp uint64 `json:"gs"`
	NumBytes uint64 `json:"len"`
}

func (n *inode) length() uint64 {
	var l uint64
	for _, b := range n.Blocks {
		l += b.NumBytes
	}
	return l
}

func (n *inode) sortedNames() []string {
	names := make([]string, 0, len(n.Children))
	for name := range n.Children {
		names = append(names, name)
	}
	slices.Sort(names) // byte order, as HDFS lists
	return names
}

// namespace is the persisted state of the namenode.
type namespace struct {
	Root      *inode `json:"root"`
	NextInode uint64 `json:"nextInode"`
	NextBlock uint64 `json:"nextBlock"`
	GenStamp  uint64 `json:"genStamp"`
}

func newNamespace() *namespace {
	now := time.Now().UnixMilli()
	return &namespace{
		Root:      &inode{ID: 16385, Dir: true, Perm: 0o755, Owner: "hdfs", Group: "supergroup", Mtime: now, Atime: now, Children: map[string]*inode{}},
		NextInode: 16386,      // as HDFS: the root is inode 16385
		NextBlock: 1073741825, // HDFS's first block ID
		GenStamp:  1001,       // HDFS's first generation stamp
	}
}

func loadNamespace(file string) (*namespace, error) {
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return newNamespace(), nil
	}
	if err != nil {
		return nil, err
	}
	ns := new(namespace)
	if err := json.Unmarshal(data, ns); err != nil {
		return nil, fmt.Errorf("hdfstest: namespace %s: %w", file, err)
	}
	if ns.Root == nil || !ns.Root.Dir {
		return nil, fmt.Errorf("hdfstest: namespace %s has no root directory", file)
	}
	var fix func(n *inode)
	fix = func(n *inode) {
		if n.Dir && n.Children == nil {
			n.Children = map[string]*inode{}
		}
		for _, c := range n.Children {
			fix(c)
		}
	}
	fix(ns.Root)
	return ns, nil
}

func (ns *namespace) save(file string) error {
	data, err := json.Marshal(ns)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Clean(file))
}

// splitPath splits an absolute HDFS path into its components, rejecting
// names that HDFS rejects (DFSUtil.isValidName).
func splitPath(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, rerr(excInvalidPath, "Invalid path name Path is not absolute: %s", p)
	}
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == "":
		case c == "." || c == ".." || strings.Contains(c, ":"):
			return nil, rerr(excInvalidPath, "Invalid path name Invalid file name: %s", p)
		default:
			parts = append(parts, c)
		}
	}
	return parts, nil
}

// walk resolves parts. It returns the inode (nil when missing), its parent
// (nil when an ancestor is missing) and whether an ancestor is a file.
func (ns *namespace) walk(parts []string) (n, parent *inode, ancestorFile bool) {
	n = ns.Root
	for i, name := range parts {
		if !n.Dir {
			return nil, nil, true
		}
		parent = n
		n = n.Children[name]
		if n == nil {
			if i < len(parts)-1 {
				parent = nil
			}
			return nil, parent, false
		}
	}
	return n, parent, false
}

// byID finds an inode and its path by inode ID.
func (ns *namespace) byID(id uint64) (*inode, string) {
	var found *inode
	var foundPath string
	var visit func(n *inode, p string) bool
	visit = func(n *inode, p string) bool {
		if n.ID == id {
			found, foundPath = n, p
			return true
		}
		for name, c := range n.Children {
			if visit(c, strings.TrimSuffix(p, "/")+"/"+name) {
				return true
			}
		}
		return false
	}
	visit(ns.Root, "/")
	return found, foundPath
}

// fileOfBlock returns the file holding block id.
func (ns *namespace) fileOfBlock(id uint64) *inode {
	var found *inode
	var visit func(n *inode) bool
	visit = func(n *inode) bool {
		for _, b := range n.Blocks {
			if b.ID == id {
				found = n
				return true
			}
		}
		for _, c := range n.Children {
			if visit(c) {
				return true
			}
		}
		return false
	}
	visit(ns.Root)
	return found
}

// blocksUnder lists the blocks of every file at or under n.
func blocksUnder(n *inode, out []uint64) []uint64 {
	for _, b := range n.Blocks {
		out = append(out, b.ID)
	}
	for _, c := range n.Children {
		out = blocksUnder(c, out)
	}
	return out
}

func isUnder(parts, prefix []string) bool {
	return len(parts) >= len(prefix) && slices.Equal(parts[:len(prefix)], prefix)
}
