//go:build linux && race

package chaos

// raceEnabled reports whether the tests run with the race detector, in
// which case the suite builds ingest and processor with it too.
const raceEnabled = true
