package masking

import "errors"

var (
	// ErrNoSpec: New was given no MaskSpec.
	ErrNoSpec = errors.New("no mask spec")
	// ErrKey: the hash masker needs a secret key of at least MinKeyLen bytes.
	ErrKey = errors.New("hash key too short")
	// ErrRedaction: the redaction marker must be printable ASCII without
	// quotes or backslashes, so that it stays valid in JSON and COPY output.
	ErrRedaction = errors.New("invalid redaction marker")
	// ErrCopyFormat: inconsistent COPY options (delimiter, quote, escape).
	ErrCopyFormat = errors.New("invalid COPY format")
	// ErrCopyRow: a COPY row could not be parsed (unterminated quote, text
	// after the row's end). The relay should fail closed: the row cannot be
	// masked, so it must not be forwarded.
	ErrCopyRow = errors.New("malformed COPY row")
	// ErrFieldCount: a COPY row has more or fewer fields than the plan has
	// columns.
	ErrFieldCount = errors.New("COPY row does not match the column count")
)
