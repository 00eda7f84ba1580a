// Package spool keeps AMQP messages on local disk while the broker cannot
// take them, so that ingest can still acknowledge webhooks during a short
// broker outage. A Spool is one bbolt file. Put writes a message in one
// transaction, which bbolt syncs to disk before the commit returns. A drainer
// reads the oldest messages with Oldest, publishes them, and removes them
// with Delete after the broker's confirm.
//
// # File format
//
// The file has two buckets. "messages" maps an 8-byte big-endian key from the
// bucket's NextSequence to a record, so that key order is arrival order.
// "meta" holds the format version and the number and total size of the
// records, which every write updates in the same transaction, so that Stats
// needs no scan. A record is a format byte (1), the spool time as 8-byte
// big-endian Unix nanoseconds, and the encoding/gob encoding of the exchange,
// the routing key and the amqp.Publishing (properties, headers and body).
// gob keeps the Go types of header values, which JSON would turn into
// strings and float64.
package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Errors that the Spool's functions and methods return, wrapped with detail.
var (
	// ErrFull means the record would raise the spool's size above its
	// maximum. Nothing was written.
	ErrFull = errors.New("spool: spool is full")
	// ErrLocked means another process, such as a second ingest with the
	// same spool directory, has the file open.
	ErrLocked = errors.New("spool: spool file is locked by another process")
	// ErrFormat means the file is not a spool file of this format.
	ErrFormat = errors.New("spool: unsupported spool file format")
)

// LockTimeout is how long Open waits for the file lock before it returns
// ErrLocked.
const LockTimeout = time.Second

// batchDelay is how long Put waits for concurrent calls to join its
// transaction. Writes queue behind the running commit's sync anyway, so a
// short delay keeps the latency of a lone Put low. BenchmarkPutParallel (32
// writers, 2 KiB bodies, a 2-core VM) ran about 4 times faster than with
// bbolt's default of 10 ms.
const batchDelay = time.Millisecond

// recordFormat is the first byte of every record and the value of the
// format key.
const recordFormat = 1

// recordHeaderSize is the size of a record before its gob payload: the
// format byte and the spool time.
const recordHeaderSize = 1 + 8

// keySize is the size of a record's key, which counts towards its size.
const keySize = 8

var (
	messagesBucket = []byte("messages")
	metaBucket     = []byte("meta")
	formatKey      = []byte("format")
	statsKey       = []byte("stats")
)

func init() {
	// The types that amqp091-go accepts in a header table, so that gob can
	// encode them as interface values of amqp.Table and []any.
	for _, v := range []any{
		amqp.Table{}, []any{}, amqp.Decimal{}, time.Time{}, []byte{},
		false, int8(0), uint8(0), int16(0), uint16(0), int32(0), uint32(0),
		int64(0), int(0), float32(0), float64(0), "",
	} {
		gob.Register(v)
	}
}

// Entry is one message waiting in the spool.
type Entry struct {
	Exchange   string
	RoutingKey string
	// Publishing is the message as it is published, with its properties,
	// headers and body.
	Publishing amqp.Publishing
	// SpooledAt is when the message was written to the spool. Put sets it
	// to the current time when it is zero.
	SpooledAt time.Time
}

// Record is an Entry read from the spool, with its key and its size.
type Record struct {
	// Key identifies the record for Delete. Keys grow with every Put, so a
	// smaller key is an older record.
	Key uint64
	// Size is the number of bytes that the record counts towards the
	// spool's maximum: its key and its encoded value.
	Size  int64
	Entry Entry
}

// Stats is a snapshot of a spool's contents.
type Stats struct {
	Messages int64
	// Bytes is the total size of the records (see Record.Size). The file
	// is larger: bbolt adds page overhead and keeps freed pages for reuse.
	Bytes    int64
	MaxBytes int64
	// Oldest is when the oldest record was spooled, or zero when the spool
	// is empty.
	Oldest time.Time
	// Full reports whether the size has reached the maximum, or the latest
	// Put returned ErrFull and no Delete has freed space since.
	Full bool
}

// OldestAge returns how long the oldest record has waited at now, or zero
// when the spool is empty.
func (s Stats) OldestAge(now time.Time) time.Duration {
	if s.Oldest.IsZero() {
		return 0
	}
	return max(now.Sub(s.Oldest), 0)
}

// Spool is an open spool file. It is safe for concurrent use.
type Spool struct {
	db       *bolt.DB
	path     string
	maxBytes int64
	// rejected is set when Put returns ErrFull, and cleared by a Put that
	// succeeds or a Delete that removes a record.
	rejected atomic.Bool
}

// Open opens the spool file at path, or creates it with mode 0600 in an
// existing directory. An existing file keeps its records,
// so a new process resumes draining where the last one stopped. maxBytes (at
// least 1) caps the total size of the records. Open returns an error wrapping
// ErrLocked when another process holds the file's lock for LockTimeout, and
// one wrapping ErrFormat when the file is not a spool file of this format.
func Open(path string, maxBytes int64) (*Spool, error) {
	if maxBytes < 1 {
		return nil, fmt.Errorf("spool: invalid max bytes %d: must be at least 1", maxBytes)
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)

	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is still locked after %s, probably by another ingest with the same spool directory", ErrLocked, path, LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	if err := initialize(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	if created {
		// The new file's directory entry must reach the disk too, or a
		// power loss could drop the whole file with its records.
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("spool: open %s: %w", path, err)
		}
	}
	db.MaxBatchDelay = batchDelay
	return &Spool{db: db, path: path, maxBytes: maxBytes}, nil
}

// initialize creates the buckets of a new file and checks the format of an
// existing one.
func initialize(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			if tx.Bucket(messagesBucket) != nil {
				return fmt.Errorf("%w: bucket %q without %q", ErrFormat, messagesBucket, metaBucket)
			}
			var err error
			if meta, err = tx.CreateBucket(metaBucket); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(messagesBucket); err != nil {
				return err
			}
			if err := meta.Put(formatKey, []byte{recordFormat}); err != nil {
				return err
			}
			return writeCounts(meta, counts{})
		}
		if format := meta.Get(formatKey); !bytes.Equal(format, []byte{recordFormat}) {
			return fmt.Errorf("%w: format %v, want %d", ErrFormat, format, recordFormat)
		}
		if tx.Bucket(messagesBucket) == nil {
			return fmt.Errorf("%w: bucket %q missing", ErrFormat, messagesBucket)
		}
		_, err := readCounts(meta)
		return err
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Path returns the file's path.
func (s *Spool) Path() string {
	return s.path
}

// Close closes the file and releases its lock. Put and the other methods
// fail after Close.
func (s *Spool) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("spool: close %s: %w", s.path, err)
	}
	return nil
}

// Put writes e to the spool, or returns an error wrapping ErrFull when the
// record would raise the total size above the maximum. When Put returns nil,
// the record is on disk: bbolt syncs the file before the commit returns.
// Concurrent calls share a transaction and its sync (bbolt's DB.Batch), which
// may delay each call by up to 1 ms.
func (s *Spool) Put(e Entry) error {
	if e.SpooledAt.IsZero() {
		e.SpooledAt = time.Now()
	}
	value, err := encodeRecord(e)
	if err != nil {
		return err
	}
	size := int64(keySize + len(value))
	if size > s.maxBytes {
		s.rejected.Store(true)
		return fmt.Errorf("%w: record of %d bytes is larger than the maximum of %d bytes", ErrFull, size, s.maxBytes)
	}

	err = s.db.Batch(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		c, err := readCounts(meta)
		if err != nil {
			return err
		}
		if c.bytes+size > s.maxBytes {
			return fmt.Errorf("%w: %d of %d bytes used, record of %d bytes", ErrFull, c.bytes, s.maxBytes, size)
		}
		messages := tx.Bucket(messagesBucket)
		// Keys only grow, so no later insert lands in a filled page,
		// and pages can be filled completely.
		messages.FillPercent = 1
		seq, err := messages.NextSequence()
		if err != nil {
			return err
		}
		if err := messages.Put(encodeKey(seq), value); err != nil {
			return err
		}
		return writeCounts(meta, counts{messages: c.messages + 1, bytes: c.bytes + size})
	})
	if errors.Is(err, ErrFull) {
		s.rejected.Store(true)
		return err
	}
	if err != nil {
		return fmt.Errorf("spool: put: %w", err)
	}
	s.rejected.Store(false)
	return nil
}

// Oldest returns up to n records, oldest first.
func (s *Spool) Oldest(n int) ([]Record, error) {
	var records []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		cursor := tx.Bucket(messagesBucket).Cursor()
		for k, v := cursor.First(); k != nil && len(records) < n; k, v = cursor.Next() {
			if len(k) != keySize {
				return fmt.Errorf("%w: key of %d bytes", ErrFormat, len(k))
			}
			key := binary.BigEndian.Uint64(k)
			entry, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %d: %w", key, err)
			}
			records = append(records, Record{Key: key, Size: int64(len(k) + len(v)), Entry: entry})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: read oldest: %w", err)
	}
	return records, nil
}

// Delete removes the records with the given keys in one transaction. Keys
// that are not in the spool are ignored.
func (s *Spool) Delete(keys []uint64) error {
	removed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed = 0
		meta := tx.Bucket(metaBucket)
		c, err := readCounts(meta)
		if err != nil {
			return err
		}
		messages := tx.Bucket(messagesBucket)
		for _, key := range keys {
			k := encodeKey(key)
			v := messages.Get(k)
			if v == nil {
				continue
			}
			c.messages--
			c.bytes -= int64(len(k) + len(v))
			if err := messages.Delete(k); err != nil {
				return err
			}
			removed++
		}
		return writeCounts(meta, c)
	})
	if err != nil {
		return fmt.Errorf("spool: delete: %w", err)
	}
	if removed > 0 {
		s.rejected.Store(false)
	}
	return nil
}

// Stats returns the number and size of the records and the spool time of
// the oldest. It reads two keys and needs no scan.
func (s *Spool) Stats() (Stats, error) {
	stats := Stats{MaxBytes: s.maxBytes}
	err := s.db.View(func(tx *bolt.Tx) error {
		c, err := readCounts(tx.Bucket(metaBucket))
		if err != nil {
			return err
		}
		stats.Messages, stats.Bytes = c.messages, c.bytes
		if _, v := tx.Bucket(messagesBucket).Cursor().First(); v != nil {
			stats.Oldest, err = recordTime(v)
		}
		return err
	})
	if err != nil {
		return Stats{MaxBytes: s.maxBytes}, fmt.Errorf("spool: read stats: %w", err)
	}
	stats.Full = stats.Bytes >= s.maxBytes || s.rejected.Load()
	return stats, nil
}

// counts is the value of the stats key: the number of records and their
// total size, 8 bytes each, big-endian.
type counts struct {
	messages int64
	bytes    int64
}

func readCounts(meta *bolt.Bucket) (counts, error) {
	v := meta.Get(statsKey)
	if len(v) != 16 {
		return counts{}, fmt.Errorf("%w: stats value of %d bytes, want 16", ErrFormat, len(v))
	}
	return counts{
		messages: int64(binary.BigEndian.Uint64(v[:8])),
		bytes:    int64(binary.BigEndian.Uint64(v[8:])),
	}, nil
}

func writeCounts(meta *bolt.Bucket, c counts) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v[:8], uint64(c.messages))
	binary.BigEndian.PutUint64(v[8:], uint64(c.bytes))
	return meta.Put(statsKey, v)
}

func encodeKey(key uint64) []byte {
	k := make([]byte, keySize)
	binary.BigEndian.PutUint64(k, key)
	return k
}

// payload is the gob-encoded part of a record.
type payload struct {
	Exchange   string
	RoutingKey string
	Publishing amqp.Publishing
}

func encodeRecord(e Entry) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(recordHeaderSize + len(e.Publishing.Body) + 512)
	buf.WriteByte(recordFormat)
	var spooledAt [8]byte
	binary.BigEndian.PutUint64(spooledAt[:], uint64(e.SpooledAt.UnixNano()))
	buf.Write(spooledAt[:])
	err := gob.NewEncoder(&buf).Encode(payload{
		Exchange:   e.Exchange,
		RoutingKey: e.RoutingKey,
		Publishing: e.Publishing,
	})
	if err != nil {
		return nil, fmt.Errorf("spool: encode message %q: %w", e.Publishing.MessageId, err)
	}
	return buf.Bytes(), nil
}

// decodeRecord decodes a record. The entry does not refer to v, which bbolt
// owns only for the transaction.
func decodeRecord(v []byte) (Entry, error) {
	spooledAt, err := recordTime(v)
	if err != nil {
		return Entry{}, err
	}
	var p payload
	if err := gob.NewDecoder(bytes.NewReader(v[recordHeaderSize:])).Decode(&p); err != nil {
		return Entry{}, fmt.Errorf("decode record: %w", err)
	}
	return Entry{
		Exchange:   p.Exchange,
		RoutingKey: p.RoutingKey,
		Publishing: p.Publishing,
		SpooledAt:  spooledAt,
	}, nil
}

func recordTime(v []byte) (time.Time, error) {
	if len(v) < recordHeaderSize || v[0] != recordFormat {
		return time.Time{}, fmt.Errorf("%w: record of %d bytes with format byte %v", ErrFormat, len(v), v[:min(len(v), 1)])
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[1:recordHeaderSize]))), nil
}
