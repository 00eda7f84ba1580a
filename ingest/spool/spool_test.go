package spool_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/ingest/spool"
)

// openSpool opens a spool file in a new temporary directory and closes it
// when the test ends.
func openSpool(t testing.TB, maxBytes int64) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool.db"), maxBytes)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := sp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sp
}

// entry returns an entry whose message id is id and whose body has size
// bytes.
func entry(id string, size int) spool.Entry {
	return spool.Entry{
		Exchange:   "test.exchange",
		RoutingKey: "acme.order.created",
		Publishing: amqp.Publishing{
			MessageId:    id,
			DeliveryMode: amqp.Persistent,
			ContentType:  "application/json",
			Headers:      amqp.Table{"hookbus-source": "acme"},
			Body:         []byte(strings.Repeat("x", size)),
		},
	}
}

func mustPut(t testing.TB, sp *spool.Spool, e spool.Entry) {
	t.Helper()
	if err := sp.Put(e); err != nil {
		t.Fatalf("Put %s: %v", e.Publishing.MessageId, err)
	}
}

func mustStats(t testing.TB, sp *spool.Spool) spool.Stats {
	t.Helper()
	stats, err := sp.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return stats
}

func mustOldest(t testing.TB, sp *spool.Spool, n int) []spool.Record {
	t.Helper()
	records, err := sp.Oldest(n)
	if err != nil {
		t.Fatalf("Oldest(%d): %v", n, err)
	}
	return records
}

func ids(records []spool.Record) []string {
	out := make([]string, len(records))
	for i, r := range records {
		out[i] = r.Entry.Publishing.MessageId
	}
	return out
}

func keys(records []spool.Record) []uint64 {
	out := make([]uint64, len(records))
	for i, r := range records {
		out[i] = r.Key
	}
	return out
}

func totalSize(records []spool.Record) int64 {
	var total int64
	for _, r := range records {
		total += r.Size
	}
	return total
}

func TestPutOldestDeleteOrder(t *testing.T) {
	sp := openSpool(t, 1<<20)
	var want []string
	for i := range 10 {
		id := fmt.Sprintf("m%02d", i)
		want = append(want, id)
		mustPut(t, sp, entry(id, 100))
	}

	first := mustOldest(t, sp, 3)
	if got := ids(first); !reflect.DeepEqual(got, want[:3]) {
		t.Fatalf("Oldest(3) ids = %v, want %v", got, want[:3])
	}
	all := mustOldest(t, sp, 100)
	if got := ids(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("Oldest(100) ids = %v, want %v", got, want)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Key <= all[i-1].Key {
			t.Errorf("key %d at position %d is not above key %d before it", all[i].Key, i, all[i-1].Key)
		}
	}

	if err := sp.Delete(keys(first)); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	rest := mustOldest(t, sp, 100)
	if got := ids(rest); !reflect.DeepEqual(got, want[3:]) {
		t.Fatalf("after Delete, ids = %v, want %v", got, want[3:])
	}

	// Deleting keys that are gone or never existed changes nothing.
	if err := sp.Delete(append(keys(first), 1<<40)); err != nil {
		t.Fatalf("Delete of missing keys: %v", err)
	}
	if got := mustStats(t, sp).Messages; got != 7 {
		t.Errorf("Messages after deleting missing keys = %d, want 7", got)
	}

	// Deleting out of order removes exactly the given records.
	if err := sp.Delete([]uint64{rest[6].Key, rest[2].Key}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantLeft := []string{"m03", "m04", "m06", "m07", "m08"}
	if got := ids(mustOldest(t, sp, 100)); !reflect.DeepEqual(got, wantLeft) {
		t.Errorf("after out-of-order Delete, ids = %v, want %v", got, wantLeft)
	}
}

func TestEntryRoundTrip(t *testing.T) {
	sp := openSpool(t, 1<<20)
	timestamp := time.Date(2026, 3, 1, 12, 30, 45, 0, time.UTC)
	spooledAt := time.Date(2026, 3, 1, 12, 30, 46, 123456789, time.UTC)
	want := spool.Entry{
		Exchange:   "webhooks",
		RoutingKey: "github.push",
		SpooledAt:  spooledAt,
		Publishing: amqp.Publishing{
			Headers: amqp.Table{
				"hookbus-contract":     "1",
				"http.x-forwarded-for": []any{"10.0.0.1", "10.0.0.2"},
				"count":                int32(7),
				"big":                  int64(1) << 40,
				"flag":                 true,
				"ratio":                0.5,
				"when":                 timestamp,
				"raw":                  []byte{0, 1, 2, 255},
				"price":                amqp.Decimal{Scale: 2, Value: 1999},
				"nested":               amqp.Table{"inner": "value", "level": int16(2)},
			},
			ContentType:     "application/json",
			ContentEncoding: "identity",
			DeliveryMode:    amqp.Persistent,
			Priority:        3,
			CorrelationId:   "corr-1",
			ReplyTo:         "replies",
			Expiration:      "60000",
			MessageId:       "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			Timestamp:       timestamp,
			Type:            "push",
			UserId:          "guest",
			AppId:           "hookbus-ingest",
			Body:            []byte(`{"ref":"refs/heads/main"}` + "\x00\xff"),
		},
	}
	mustPut(t, sp, want)

	records := mustOldest(t, sp, 1)
	if len(records) != 1 {
		t.Fatalf("Oldest returned %d records, want 1", len(records))
	}
	got := records[0].Entry
	if !got.SpooledAt.Equal(want.SpooledAt) {
		t.Errorf("SpooledAt = %v, want %v", got.SpooledAt, want.SpooledAt)
	}
	if !got.Publishing.Timestamp.Equal(want.Publishing.Timestamp) {
		t.Errorf("Timestamp = %v, want %v", got.Publishing.Timestamp, want.Publishing.Timestamp)
	}
	if when, ok := got.Publishing.Headers["when"].(time.Time); !ok || !when.Equal(timestamp) {
		t.Errorf("header when = %#v, want %v", got.Publishing.Headers["when"], timestamp)
	}
	// time.Time values compare by instant above; the rest must be equal.
	got.SpooledAt, want.SpooledAt = time.Time{}, time.Time{}
	got.Publishing.Timestamp, want.Publishing.Timestamp = time.Time{}, time.Time{}
	delete(got.Publishing.Headers, "when")
	delete(want.Publishing.Headers, "when")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entry after the round trip:\n got %#v\nwant %#v", got, want)
	}
}

func TestPutSetsSpooledAt(t *testing.T) {
	sp := openSpool(t, 1<<20)
	before := time.Now()
	mustPut(t, sp, entry("m1", 10))
	after := time.Now()

	got := mustOldest(t, sp, 1)[0].Entry.SpooledAt
	if got.Before(before) || got.After(after) {
		t.Errorf("SpooledAt = %v, want between %v and %v", got, before, after)
	}
	if oldest := mustStats(t, sp).Oldest; !oldest.Equal(got) {
		t.Errorf("Stats().Oldest = %v, want the record's SpooledAt %v", oldest, got)
	}
}

func TestStatsByteAccounting(t *testing.T) {
	sp := openSpool(t, 1<<20)
	empty := mustStats(t, sp)
	if empty.Messages != 0 || empty.Bytes != 0 || !empty.Oldest.IsZero() || empty.Full {
		t.Fatalf("Stats of an empty spool = %+v, want zero counts, zero Oldest, not full", empty)
	}
	if empty.MaxBytes != 1<<20 {
		t.Errorf("MaxBytes = %d, want %d", empty.MaxBytes, 1<<20)
	}

	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		e := entry(fmt.Sprintf("m%d", i), 1000*(i+1))
		e.SpooledAt = start.Add(time.Duration(i) * time.Second)
		mustPut(t, sp, e)
	}
	records := mustOldest(t, sp, 10)
	stats := mustStats(t, sp)
	if stats.Messages != 5 {
		t.Errorf("Messages = %d, want 5", stats.Messages)
	}
	if want := totalSize(records); stats.Bytes != want {
		t.Errorf("Bytes = %d, want the records' total size %d", stats.Bytes, want)
	}
	if !stats.Oldest.Equal(start) {
		t.Errorf("Oldest = %v, want %v", stats.Oldest, start)
	}
	if age := stats.OldestAge(start.Add(90 * time.Second)); age != 90*time.Second {
		t.Errorf("OldestAge 90s after the oldest = %v, want 90s", age)
	}
	for i, r := range records {
		if body := int64(len(r.Entry.Publishing.Body)); r.Size <= body {
			t.Errorf("record %d: Size %d is not above its body size %d", i, r.Size, body)
		}
	}

	if err := sp.Delete(keys(records[:2])); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	stats = mustStats(t, sp)
	if want := totalSize(records[2:]); stats.Bytes != want {
		t.Errorf("Bytes after Delete = %d, want %d", stats.Bytes, want)
	}
	if stats.Messages != 3 {
		t.Errorf("Messages after Delete = %d, want 3", stats.Messages)
	}
	if want := start.Add(2 * time.Second); !stats.Oldest.Equal(want) {
		t.Errorf("Oldest after Delete = %v, want %v", stats.Oldest, want)
	}

	if err := sp.Delete(keys(records[2:])); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	stats = mustStats(t, sp)
	if stats.Messages != 0 || stats.Bytes != 0 || !stats.Oldest.IsZero() {
		t.Errorf("Stats after deleting everything = %+v, want zero counts and zero Oldest", stats)
	}
	if age := stats.OldestAge(time.Now()); age != 0 {
		t.Errorf("OldestAge of an empty spool = %v, want 0", age)
	}
}

func TestPutFull(t *testing.T) {
	const maxBytes = 8 << 10
	sp := openSpool(t, maxBytes)

	put := 0
	var fullErr error
	for i := range 100 {
		err := sp.Put(entry(fmt.Sprintf("m%d", i), 1000))
		if err != nil {
			fullErr = err
			break
		}
		put++
	}
	if !errors.Is(fullErr, spool.ErrFull) {
		t.Fatalf("Put after %d records returned %v, want ErrFull", put, fullErr)
	}
	if put < 4 {
		t.Fatalf("only %d records of about 1 KB fit in %d bytes", put, maxBytes)
	}

	stats := mustStats(t, sp)
	if stats.Messages != int64(put) {
		t.Errorf("Messages = %d, want %d: the rejected Put must write nothing", stats.Messages, put)
	}
	if stats.Bytes > maxBytes {
		t.Errorf("Bytes = %d, above the maximum %d", stats.Bytes, maxBytes)
	}
	if !stats.Full {
		t.Errorf("Full = false after ErrFull")
	}

	// A record larger than the whole spool can never fit.
	if err := sp.Put(entry("huge", maxBytes)); !errors.Is(err, spool.ErrFull) {
		t.Errorf("Put of a record larger than the maximum returned %v, want ErrFull", err)
	}

	// A small record that still fits is accepted and clears Full.
	if free := maxBytes - stats.Bytes; free > 200 {
		mustPut(t, sp, entry("small", 10))
		if mustStats(t, sp).Full {
			t.Errorf("Full = true after a Put succeeded")
		}
		if err := sp.Put(entry("big", 1000)); !errors.Is(err, spool.ErrFull) {
			t.Fatalf("Put of 1 KB into %d free bytes returned %v, want ErrFull", free, err)
		}
	}

	// Deleting a record frees room and clears Full.
	if err := sp.Delete(keys(mustOldest(t, sp, 1))); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if mustStats(t, sp).Full {
		t.Errorf("Full = true after Delete freed space")
	}
	mustPut(t, sp, entry("after-delete", 1000))
}

func TestReopenResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	sp, err := spool.Open(path, 1<<20)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for i := range 5 {
		mustPut(t, sp, entry(fmt.Sprintf("m%d", i), 500))
	}
	before := mustOldest(t, sp, 10)
	statsBefore := mustStats(t, sp)
	if err := sp.Delete(keys(before[:1])); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := sp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sp, err = spool.Open(path, 1<<20)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = sp.Close() })

	after := mustOldest(t, sp, 10)
	if got, want := ids(after), ids(before[1:]); !reflect.DeepEqual(got, want) {
		t.Fatalf("ids after reopen = %v, want %v", got, want)
	}
	if got, want := keys(after), keys(before[1:]); !reflect.DeepEqual(got, want) {
		t.Errorf("keys after reopen = %v, want %v", got, want)
	}
	stats := mustStats(t, sp)
	if want := statsBefore.Bytes - before[0].Size; stats.Bytes != want {
		t.Errorf("Bytes after reopen = %d, want %d", stats.Bytes, want)
	}
	if stats.Messages != 4 {
		t.Errorf("Messages after reopen = %d, want 4", stats.Messages)
	}

	// New records sort after the old ones.
	mustPut(t, sp, entry("new", 10))
	all := mustOldest(t, sp, 10)
	if last := all[len(all)-1]; last.Entry.Publishing.MessageId != "new" || last.Key <= before[len(before)-1].Key {
		t.Errorf("record put after reopen has id %q and key %d, want id new after key %d", last.Entry.Publishing.MessageId, last.Key, before[len(before)-1].Key)
	}
}

func TestOpenLockedFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	first, err := spool.Open(path, 1<<20)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}

	start := time.Now()
	second, err := spool.Open(path, 1<<20)
	elapsed := time.Since(start)
	if err == nil {
		_ = second.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if !errors.Is(err, spool.ErrLocked) {
		t.Errorf("second Open returned %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the file %s", err, path)
	}
	if limit := spool.LockTimeout + 2*time.Second; elapsed > limit {
		t.Errorf("second Open took %v, want at most %v", elapsed, limit)
	}

	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	third, err := spool.Open(path, 1<<20)
	if err != nil {
		t.Fatalf("Open after the first Close: %v", err)
	}
	if err := third.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestOpenRejectsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "not-a-spool.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bbolt file\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if sp, err := spool.Open(path, 1<<20); err == nil {
		_ = sp.Close()
		t.Errorf("Open of a text file succeeded")
	}

	if sp, err := spool.Open(filepath.Join(dir, "missing", "spool.db"), 1<<20); err == nil {
		_ = sp.Close()
		t.Errorf("Open in a missing directory succeeded")
	}
	if sp, err := spool.Open(filepath.Join(dir, "zero.db"), 0); err == nil {
		_ = sp.Close()
		t.Errorf("Open with max bytes 0 succeeded")
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	sp := openSpool(t, 1<<20)
	info, err := os.Stat(sp.Path())
	if err != nil {
		t.Fatalf("stat spool file: %v", err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("spool file mode = %v, want 0600: webhook bodies may be confidential", mode)
	}
}

func TestConcurrentPut(t *testing.T) {
	const writers, perWriter = 50, 4
	sp := openSpool(t, 64<<20)

	var wg sync.WaitGroup
	errs := make(chan error, writers*perWriter)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if err := sp.Put(entry(fmt.Sprintf("w%02d-%d", w, i), 200+w)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Put: %v", err)
	}

	records := mustOldest(t, sp, writers*perWriter+10)
	if len(records) != writers*perWriter {
		t.Fatalf("Oldest returned %d records, want %d", len(records), writers*perWriter)
	}
	seenIDs := map[string]bool{}
	seenKeys := map[uint64]bool{}
	lastOfWriter := map[string]int{}
	for _, r := range records {
		id := r.Entry.Publishing.MessageId
		if seenIDs[id] {
			t.Errorf("id %s stored twice", id)
		}
		if seenKeys[r.Key] {
			t.Errorf("key %d used twice", r.Key)
		}
		seenIDs[id], seenKeys[r.Key] = true, true

		// Each writer's records keep the order in which it put them.
		var w, i int
		if _, err := fmt.Sscanf(id, "w%02d-%d", &w, &i); err != nil {
			t.Fatalf("unexpected id %q: %v", id, err)
		}
		writer := fmt.Sprintf("w%02d", w)
		if last, ok := lastOfWriter[writer]; ok && i <= last {
			t.Errorf("writer %s: record %d comes after record %d", writer, i, last)
		}
		lastOfWriter[writer] = i
	}

	stats := mustStats(t, sp)
	if stats.Messages != writers*perWriter {
		t.Errorf("Messages = %d, want %d", stats.Messages, writers*perWriter)
	}
	if want := totalSize(records); stats.Bytes != want {
		t.Errorf("Bytes = %d, want %d", stats.Bytes, want)
	}
}

// BenchmarkPutParallel measures Put from many goroutines, whose writes share
// transactions and syncs. The result depends on the disk's sync latency.
func BenchmarkPutParallel(b *testing.B) {
	sp := openSpool(b, 1<<40)
	e := entry("bench", 2048)
	b.SetBytes(int64(len(e.Publishing.Body)))
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := sp.Put(e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// fill puts records with bodies of bodySize bytes from 16 goroutines until
// the spool returns ErrFull, and returns how many it put.
func fill(t *testing.T, sp *spool.Spool, bodySize int) int64 {
	t.Helper()
	var put atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := sp.Put(entry("fill", bodySize))
				if errors.Is(err, spool.ErrFull) {
					return
				}
				if err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				put.Add(1)
			}
		}()
	}
	wg.Wait()
	return put.Load()
}

// drain deletes every record, 64 at a time.
func drain(t *testing.T, sp *spool.Spool) {
	t.Helper()
	for {
		records := mustOldest(t, sp, 64)
		if len(records) == 0 {
			return
		}
		if err := sp.Delete(keys(records)); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
}

func TestFileReusesFreedPages(t *testing.T) {
	const maxBytes = 8 << 20
	sp := openSpool(t, maxBytes)
	fileSize := func() int64 {
		info, err := os.Stat(sp.Path())
		if err != nil {
			t.Fatalf("stat spool file: %v", err)
		}
		return info.Size()
	}

	// Records of about 2.5 KB fit one to a 4 KiB page and leave much of
	// each page empty, which makes the file large for its records.
	first := fill(t, sp, 2048)
	sizeAfterFirst := fileSize()
	t.Logf("%d records, %d bytes of records, file of %d bytes", first, mustStats(t, sp).Bytes, sizeAfterFirst)
	if limit := int64(2*maxBytes + 16<<20); sizeAfterFirst > limit {
		t.Errorf("file of %d bytes for %d bytes of records, want at most %d", sizeAfterFirst, maxBytes, limit)
	}

	drain(t, sp)
	if stats := mustStats(t, sp); stats.Messages != 0 || stats.Bytes != 0 {
		t.Fatalf("Stats after draining = %+v, want empty", stats)
	}
	second := fill(t, sp, 2048)
	if second != first {
		t.Errorf("the second fill put %d records, the first %d", second, first)
	}
	if size := fileSize(); size > sizeAfterFirst {
		t.Errorf("file grew from %d to %d bytes on the second fill; freed pages must be reused", sizeAfterFirst, size)
	}
}
