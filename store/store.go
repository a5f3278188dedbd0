// Package store is kiln's persistence layer: named buckets of keys and values
// with atomic multi-key transactions.
//
// The interface is deliberately small so that an etcd backend can implement it
// later. Bolt, an embedded bbolt file, is the default.
package store

import (
	"errors"
)

// ErrNotFound is returned by Tx.Get when the key does not exist.
var ErrNotFound = errors.New("not found")

// Store is a transactional key/value store organised in buckets.
//
// Implementations MUST make each Update atomic and durable before it returns:
// either every Put and Delete of fn is on disk, or none is. View and Update
// MAY run concurrently with each other; each sees a consistent snapshot.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits it when fn
	// returns nil. A non-nil error from fn rolls back every change.
	Update(fn func(Tx) error) error
	// Close releases the store. It MUST be safe to call once.
	Close() error
}

// Tx is one transaction. A Tx MUST NOT be used after its View or Update
// returns. Buckets are created on first Put.
type Tx interface {
	// Get returns a copy of the value of key in bucket, or ErrNotFound.
	Get(bucket, key string) ([]byte, error)
	// Put sets key in bucket. It fails in a read-only transaction.
	Put(bucket, key string, value []byte) error
	// Delete removes key from bucket. Deleting a missing key is not an error.
	Delete(bucket, key string) error
	// ForEach calls fn for every key of bucket in ascending key order. The
	// value is only valid during the call. A missing bucket has no keys.
	ForEach(bucket string, fn func(key string, value []byte) error) error
}
