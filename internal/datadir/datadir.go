// Package datadir guards a node's data directory. It records which cluster
// and node own the directory, refuses to start a different one on it, and
// holds a lock so two processes never share it.
package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrForeign means the directory belongs to another cluster or node.
var ErrForeign = errors.New("data dir belongs to another cluster or node")

// ErrLocked means another process is using the directory.
var ErrLocked = errors.New("data dir is in use by another process")

const identityFile = "seqd-identity.json"

// Identity is what a data directory records about its owner.
type Identity struct {
	ClusterID string `json:"cluster_id"`
	NodeID    string `json:"node_id"`
	Role      string `json:"role"`
	// Shard is the message-store shard of a node with the store role
	// ("" for others). Directories from builds before it was recorded
	// have none; the first start on them records it.
	Shard string `json:"shard,omitempty"`
}

// String names the identity as errors do: cluster, node and (if set) role
// and shard.
func (id Identity) String() string {
	s := fmt.Sprintf("cluster %q node %q", id.ClusterID, id.NodeID)
	if id.Role != "" {
		s += fmt.Sprintf(" role %q", id.Role)
	}
	if id.Shard != "" {
		s += fmt.Sprintf(" store shard %q", id.Shard)
	}
	return s
}

// Dir is a claimed data directory. Close releases the lock.
type Dir struct {
	Path string
	lock *os.File
}

// Claim creates dir if needed, locks it, and checks or records id. It fails
// with ErrForeign if the directory was created for another cluster, node or
// role, and with ErrLocked if another process holds it.
func Claim(dir string, id Identity) (*Dir, error) {
	if dir == "" {
		return nil, errors.New("data dir: no path given")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%w: %s (is another seqd running with --data %s?)", ErrLocked, dir, dir)
	}
	d := &Dir{Path: dir, lock: lf}
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if other, err := holdsData(dir); err != nil || other != "" {
			d.Close()
			if err != nil {
				return nil, fmt.Errorf("data dir %s: %w", dir, err)
			}
			return nil, fmt.Errorf("%w: %s holds data (%s) but no %s, which names the cluster and node it belongs to: put the file back, or use an empty --data dir",
				ErrForeign, dir, other, identityFile)
		}
		if err := writeIdentity(path, id); err != nil {
			d.Close()
			return nil, err
		}
		return d, nil
	case err != nil:
		d.Close()
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	var have Identity
	if err := json.Unmarshal(b, &have); err != nil {
		d.Close()
		return nil, fmt.Errorf("data dir %s: %s is corrupt (%v); move it aside only if the directory holds no data you need", dir, identityFile, err)
	}
	if have.Shard == "" && id.Shard != "" && have == (Identity{ClusterID: id.ClusterID, NodeID: id.NodeID, Role: id.Role}) {
		// Recorded by a build that kept no shard: record it now.
		if err := writeIdentity(path, id); err != nil {
			d.Close()
			return nil, err
		}
		return d, nil
	}
	if have != id {
		d.Close()
		return nil, fmt.Errorf("%w: %s was created for %s, not %s; use an empty --data dir or the matching --cluster-id/--id/--shard",
			ErrForeign, dir, have, id)
	}
	return d, nil
}

// holdsData returns the name of an entry of dir other than the lock, an
// unfinished identity write and a fresh file system's lost+found, or "".
func holdsData(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if n := e.Name(); n != ".lock" && n != identityFile+".tmp" && n != "lost+found" {
			return n, nil
		}
	}
	return "", nil
}

// IsEmpty reports whether the directory holds no seqd identity yet.
func IsEmpty(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, identityFile))
	return errors.Is(err, os.ErrNotExist)
}

// writeIdentity writes the identity file durably (the file, then the
// directory entry, synced) before the node writes any data: a directory
// with data but no identity is refused.
func writeIdentity(path string, id Identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	tmp := path + ".tmp"
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}()
	if err != nil {
		return fmt.Errorf("data dir: write identity: %w", err)
	}
	return nil
}

// Close releases the lock.
func (d *Dir) Close() error {
	if d == nil || d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// Space returns the bytes free (to an unprivileged writer) and the size of
// the file system holding the directory.
func (d *Dir) Space() (free, size uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.Path, &st); err != nil {
		return 0, 0, fmt.Errorf("data dir %s: %w", d.Path, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}
