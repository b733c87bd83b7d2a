package postgres

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// libpg_query's JSON wraps a value in {"TypeName": {…}} only where the C field
// is a generic Node; fields declared with a concrete struct type (the
// relation of an INSERT, the into clause of SELECT INTO, …) appear as bare
// objects. To walk every nested node the walker therefore needs the type of
// each field, which the protobuf descriptors of the same libpg_query release
// provide: the JSON member names are the protobuf JSON names.

// fieldKind says what a field of a parse-tree message holds.
type fieldKind uint8

const (
	fieldScalar  fieldKind = iota + 1 // number, string, bool or enum name
	fieldNode                         // a Node wrapper: {"Type": {…}}
	fieldMessage                      // a bare message of a known type
)

type fieldType struct {
	kind fieldKind
	msg  string // message name for fieldMessage
	list bool
}

// msgFields maps a message name to its fields by JSON name.
type msgFields map[string]fieldType

// nodeSchema describes every message of the parse tree. It is built once at
// package initialisation from read-only descriptors and never written after.
var nodeSchema = buildNodeSchema(pg_query.File_pg_query_proto)

func buildNodeSchema(file protoreflect.FileDescriptor) map[string]msgFields {
	msgs := file.Messages()
	schema := make(map[string]msgFields, msgs.Len())
	for i := 0; i < msgs.Len(); i++ {
		m := msgs.Get(i)
		fields := m.Fields()
		mf := make(msgFields, fields.Len())
		for j := 0; j < fields.Len(); j++ {
			f := fields.Get(j)
			ft := fieldType{kind: fieldScalar, list: f.IsList()}
			if md := f.Message(); md != nil {
				if md.Name() == "Node" {
					ft.kind = fieldNode
				} else {
					ft.kind = fieldMessage
					ft.msg = string(md.Name())
				}
			}
			mf[f.JSONName()] = ft
		}
		schema[string(m.Name())] = mf
	}
	return schema
}
