package recording

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by appends after Close.
var ErrClosed = errors.New("recording: recorder is closed")

// ErrNoSession is returned for statements of a session whose start was not
// recorded.
var ErrNoSession = errors.New("recording: the session's start was not recorded")

// ErrBadKey is returned when the signing key file cannot be used.
var ErrBadKey = errors.New("recording: bad signing key")

// BadRecordError is what Verify returns for the first record that breaks
// the chain: where it is, which sequence number it has (or should have),
// and what is wrong.
type BadRecordError struct {
	Seq      uint64 // the record's sequence number (the expected one when it cannot be read)
	Location string // segment file and line, or table row
	Reason   string
}

func (e *BadRecordError) Error() string {
	return fmt.Sprintf("record seq %d (%s): %s", e.Seq, e.Location, e.Reason)
}

// Is lets errors.Is(err, &BadRecordError{}) match any BadRecordError.
func (e *BadRecordError) Is(target error) bool {
	_, ok := target.(*BadRecordError)
	return ok
}
