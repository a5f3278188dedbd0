package store

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxBatch is the number of writes one GroupCommit transaction holds
// when GroupCommitOptions.MaxBatch is zero.
const DefaultMaxBatch = 1024

// ErrClosed is returned by the wait func of a write enqueued after
// GroupCommit.Close.
var ErrClosed = errors.New("group commit is closed")

// GroupCommitOptions tunes a GroupCommit. The zero value is the default.
type GroupCommitOptions struct {
	// MaxBatch caps the writes of one transaction; zero means
	// DefaultMaxBatch. A longer queue is committed as several transactions,
	// in order.
	MaxBatch int
	// MaxDelay is how long a batch may wait, from its first write, for more
	// writes to join it before it commits, unless it fills first. Zero, the
	// default, means no wait: a batch commits as soon as the previous one is
	// done, and the writes that arrived meanwhile form it, so batches grow
	// with the load by themselves and a lone write pays no extra latency.
	MaxDelay time.Duration
}

// GroupCommitStats counts what a GroupCommit has committed so far.
type GroupCommitStats struct {
	// Batches is the number of transactions run, failed ones included.
	Batches uint64
	// Writes is the number of writes they held.
	Writes uint64
	// Failed is the number of batches whose transaction failed.
	Failed uint64
}

// GroupCommit batches writes to a Store: every write enqueued while the
// previous transaction commits goes into the next one, so N concurrent
// writers pay for about one durable commit (one fsync with Bolt) instead of
// N. It is safe for concurrent use.
type GroupCommit struct {
	s    Store
	opts GroupCommitOptions

	wake     chan struct{} // capacity 1: a write was enqueued
	full     chan struct{} // capacity 1: a batch reached MaxBatch (cuts MaxDelay short)
	stop     chan struct{} // closed by Close
	stopOnce sync.Once
	done     chan struct{} // closed when the committer has stopped

	// mu guards queue, closed and stats.
	mu     sync.Mutex
	queue  []*batch // not yet committed, oldest first; only the last grows
	closed bool
	stats  GroupCommitStats
}

// batch is the writes of one transaction and their shared outcome.
type batch struct {
	fns   []func(Tx) error
	start time.Time     // first enqueue; only set when MaxDelay > 0
	done  chan struct{} // closed once err is set
	err   error
}

// NewGroupCommit starts a GroupCommit writing to s. Close stops it; s stays
// open and is still the caller's to close, after Close.
func NewGroupCommit(s Store, opts GroupCommitOptions) *GroupCommit {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxDelay < 0 {
		opts.MaxDelay = 0
	}
	g := &GroupCommit{
		s:    s,
		opts: opts,
		wake: make(chan struct{}, 1),
		full: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go g.run()
	return g
}

// Enqueue adds fn to the next batch, in call order (callers may hold their
// own lock while enqueuing; it never blocks on I/O). The returned wait func
// blocks until the batch containing fn is durable (or failed).
//
// The fns of a batch run in enqueue order in one Store.Update, and batches
// commit in enqueue order, so a later write to a key wins. If any fn of a
// batch returns an error (or panics), the whole transaction rolls back and
// every wait func of that batch returns the error, wrapped; later batches
// are unaffected. fn MUST NOT call the GroupCommit or the Store itself. A
// nil fn writes nothing: its wait func returns once every write enqueued
// before it is durable. The wait func may be called any number of times,
// from any goroutine, or never. After Close, the wait func returns ErrClosed.
func (g *GroupCommit) Enqueue(fn func(Tx) error) (wait func() error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return func() error { return fmt.Errorf("enqueuing store write: %w", ErrClosed) }
	}
	n := len(g.queue)
	if n == 0 || len(g.queue[n-1].fns) >= g.opts.MaxBatch {
		nb := &batch{done: make(chan struct{})}
		if g.opts.MaxDelay > 0 {
			nb.start = time.Now()
		}
		g.queue = append(g.queue, nb)
		n++
	}
	b := g.queue[n-1]
	b.fns = append(b.fns, fn)
	filled := len(b.fns) >= g.opts.MaxBatch
	g.mu.Unlock()

	signal(g.wake)
	if filled {
		signal(g.full)
	}
	return func() error {
		<-b.done
		return b.err
	}
}

// Close commits every write enqueued before it, then stops the committer.
// Enqueue after Close fails. Close does not close the Store. It is safe to
// call more than once; every call waits for the drain and returns nil.
func (g *GroupCommit) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.stopOnce.Do(func() { close(g.stop) })
	<-g.done
	return nil
}

// Stats returns the counts so far.
func (g *GroupCommit) Stats() GroupCommitStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

// signal makes a non-blocking send on a channel of capacity 1: a pending
// signal already says the same.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run is the committer: it commits the oldest batch once it is due and
// releases its waiters, until Close was called and the queue is empty.
func (g *GroupCommit) run() {
	defer close(g.done)
	for {
		b, wait, closed := g.next()
		switch {
		case b != nil:
			g.finish(b, g.commit(b.fns))
		case closed:
			return
		case wait > 0:
			g.linger(wait)
		default:
			select {
			case <-g.wake:
			case <-g.stop:
			}
		}
	}
}

// next removes and returns the oldest batch if it is due: it is full, or
// MaxDelay has passed since its first write, or Close was called. Otherwise
// it returns how long the batch may still wait (0 if the queue is empty),
// and whether Close was called.
func (g *GroupCommit) next() (b *batch, wait time.Duration, closed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		return nil, 0, g.closed
	}
	b = g.queue[0]
	if g.opts.MaxDelay > 0 && !g.closed && len(b.fns) < g.opts.MaxBatch {
		if wait = g.opts.MaxDelay - time.Since(b.start); wait > 0 {
			return nil, wait, false
		}
	}
	g.queue[0] = nil
	g.queue = g.queue[1:]
	return b, 0, g.closed
}

// linger waits d, or less if a batch fills up or Close is called. A stale
// "full" signal from a batch already committed only costs one more turn of
// run.
func (g *GroupCommit) linger(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.full:
	case <-g.stop:
	}
}

// finish records the outcome of b and releases its waiters.
func (g *GroupCommit) finish(b *batch, err error) {
	b.err = err
	g.mu.Lock()
	g.stats.Batches++
	g.stats.Writes += uint64(len(b.fns))
	if err != nil {
		g.stats.Failed++
	}
	g.mu.Unlock()
	close(b.done)
}

// commit runs fns in one transaction. A panic in a fn fails the batch
// instead of stopping the committer with the waiters still blocked.
func (g *GroupCommit) commit(fns []func(Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("committing batch of %d store writes: panic: %v", len(fns), r)
		}
	}()
	err = g.s.Update(func(tx Tx) error {
		for i, fn := range fns {
			if fn == nil {
				continue
			}
			if err := fn(tx); err != nil {
				return fmt.Errorf("write %d of %d: %w", i+1, len(fns), err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("committing batch of %d store writes: %w", len(fns), err)
	}
	return nil
}
