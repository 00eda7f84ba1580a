package dlq

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// maxErrorColumn is the number of characters of the last error that the
// table shows; list -json prints it whole.
const maxErrorColumn = 60

// writeTable writes entries as a table. Parked messages show their failure;
// unrouted messages, which never reached a handler, their routing key.
func writeTable(w io.Writer, kind queueKind, entries []entry) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	if kind == queueUnrouted {
		fmt.Fprintln(tw, "ID\tSOURCE\tTYPE\tROUTING KEY\tAGE")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(e.ID), cell(e.Source), cell(e.Type), cell(e.RoutingKey), formatAge(e))
		}
		return tw.Flush()
	}

	fmt.Fprintln(tw, "ID\tSOURCE\tTYPE\tATTEMPTS\tREASON\tAGE\tLAST ERROR")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n",
			cell(e.ID), cell(e.Source), cell(e.Type), e.Attempts, cell(e.Reason), formatAge(e), cell(shorten(e.Error, maxErrorColumn)))
	}
	return tw.Flush()
}

// writeJSON writes one JSON object per entry and line.
func writeJSON(w io.Writer, entries []entry) error {
	enc := json.NewEncoder(w)
	for _, e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

// writePlan writes the messages a dry run would replay and their targets.
func writePlan(w io.Writer, planned []plannedReplay) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tTYPE\tREPLAY TO")
	for _, p := range planned {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(p.entry.ID), cell(p.entry.Source), cell(p.entry.Type), describeTarget(p.exchange, p.key))
	}
	return tw.Flush()
}

// cell returns s for one table cell: on one line, without tabs, and "-"
// when empty.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Join(strings.Fields(s), " ")
}

// shorten cuts s to at most n characters, ending a cut string with "...".
func shorten(s string, n int) string {
	runes := []rune(strings.Join(strings.Fields(s), " "))
	if len(runes) <= n {
		return string(runes)
	}
	return string(runes[:n-3]) + "..."
}

// formatAge returns the age of e in its two largest units, such as "45s",
// "12m30s", "3h4m" or "2d5h", and "-" when it is unknown.
func formatAge(e entry) string {
	if !e.hasAge {
		return "-"
	}
	d := max(e.age, 0).Truncate(time.Second)
	days := d / (24 * time.Hour)
	hours := (d % (24 * time.Hour)) / time.Hour
	minutes := (d % time.Hour) / time.Minute
	seconds := (d % time.Minute) / time.Second
	switch {
	case days > 0:
		return fmt.Sprintf("%dd%dh", days, hours)
	case hours > 0:
		return fmt.Sprintf("%dh%dm", hours, minutes)
	case minutes > 0:
		return fmt.Sprintf("%dm%ds", minutes, seconds)
	}
	return fmt.Sprintf("%ds", seconds)
}

// progressLine shows replay progress on one terminal line that each update
// overwrites. A nil *progressLine does nothing.
type progressLine struct {
	w       io.Writer
	written bool
}

func (p *progressLine) update(read, ready, replayed int) {
	// \r returns to the line start and \x1b[K clears the rest of the line.
	fmt.Fprintf(p.w, "\rreplayed %d, read %d/%d\x1b[K", replayed, read, ready)
	p.written = true
}

// finish ends the progress line so that later output starts on a new line.
func (p *progressLine) finish() {
	if p != nil && p.written {
		fmt.Fprintln(p.w)
	}
}
