// inventory: a small in-memory database/sql driver, so the demo's backend queries a database
// (and odiglet shows database spans) without a database server or any module download.
package main

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"strings"
)

var tables = map[string]map[string]driver.Value{
	"products": {"odiglet-mug": 12.5},
	"stock":    {"odiglet-mug": int64(3)},
}

type inventoryDriver struct{}
type inventoryConn struct{}
type inventoryRows struct{ value driver.Value }

func (inventoryDriver) Open(string) (driver.Conn, error)  { return inventoryConn{}, nil }
func (inventoryConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("no statements") }
func (inventoryConn) Close() error                        { return nil }
func (inventoryConn) Begin() (driver.Tx, error)           { return nil, errors.New("read-only") }
func (r *inventoryRows) Columns() []string                { return []string{"value"} }
func (r *inventoryRows) Close() error                     { return nil }

// QueryContext answers `SELECT <column> FROM <table> WHERE sku = $1 ...`.
func (inventoryConn) QueryContext(_ context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	fields := strings.Fields(query)
	if len(fields) < 4 || len(args) == 0 {
		return nil, errors.New("unsupported query")
	}
	table, ok := tables[fields[3]]
	if !ok {
		return nil, errors.New("no such table")
	}
	sku, _ := args[0].Value.(string)
	value, ok := table[sku]
	if !ok {
		return nil, errors.New("unknown sku")
	}
	return &inventoryRows{value: value}, nil
}

func (r *inventoryRows) Next(dest []driver.Value) error {
	if r.value == nil {
		return io.EOF
	}
	dest[0], r.value = r.value, nil
	return nil
}
