package dhcp

import (
	"github.com/kiln-dev/kiln/store"
)

// committer makes lease writes durable. enqueue is called with s.mu held and
// never waits for the disk; writes become durable in call order. The
// returned wait blocks until fn's write is durable or failed. A nil fn
// writes nothing; its wait returns once every write enqueued before it is
// done.
type committer interface {
	enqueue(fn func(store.Tx) error) (wait func() error)
	close() error
}

// newCommitter is the lease writer New uses: group commit, so that the
// writes of concurrent requests share one transaction and one fsync.
func newCommitter(st store.Store) committer {
	return groupCommitter{store.NewGroupCommit(st, store.GroupCommitOptions{})}
}

type groupCommitter struct{ g *store.GroupCommit }

func (c groupCommitter) enqueue(fn func(store.Tx) error) func() error { return c.g.Enqueue(fn) }
func (c groupCommitter) close() error                                 { return c.g.Close() }

// syncCommitter writes each change in its own transaction at once, while
// the caller holds s.mu: every request waits for the one before it to reach
// the disk. It is the writer before group commit, kept for comparison
// (BenchmarkDORA) and as a fallback.
type syncCommitter struct{ st store.Store }

func (c syncCommitter) enqueue(fn func(store.Tx) error) func() error {
	if fn == nil {
		return func() error { return nil }
	}
	err := c.st.Update(fn)
	return func() error { return err }
}

func (syncCommitter) close() error { return nil }
