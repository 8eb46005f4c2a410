package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

type fakeDriver struct{}
type fakeConn struct{}
type fakeRows struct{ done bool }
type fakeResult struct{}
type fakeStmt struct{ q string }

func (fakeDriver) Open(string) (driver.Conn, error)    { return fakeConn{}, nil }
func (fakeConn) Prepare(q string) (driver.Stmt, error) { return fakeStmt{q}, nil }
func (fakeConn) Close() error                          { return nil }
func (fakeConn) Begin() (driver.Tx, error)             { return nil, errors.New("no transactions") }
func (r *fakeRows) Columns() []string                  { return []string{"n"} }
func (r *fakeRows) Close() error                       { return nil }
func (fakeResult) LastInsertId() (int64, error)        { return 0, nil }
func (fakeResult) RowsAffected() (int64, error)        { return 1, nil }

func (fakeConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	if strings.Contains(q, "fail") {
		return nil, errors.New("syntax error")
	}
	return &fakeRows{}, nil
}

func (fakeConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	if strings.Contains(q, "fail") {
		return nil, errors.New("constraint violated")
	}
	return fakeResult{}, nil
}

func (s fakeStmt) Close() error  { return nil }
func (s fakeStmt) NumInput() int { return -1 }

func (s fakeStmt) Exec(args []driver.Value) (driver.Result, error) {
	return fakeConn{}.ExecContext(context.Background(), s.q, nil)
}

func (s fakeStmt) Query(args []driver.Value) (driver.Rows, error) {
	return fakeConn{}.QueryContext(context.Background(), s.q, nil)
}

func (r *fakeRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = int64(1)
	return nil
}

func main() {
	sql.Register("fakedb", fakeDriver{})
	db, _ := sql.Open("fakedb", "")
	query := func(ctx context.Context, q string) error {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		return rows.Close()
	}
	http.HandleFunc("/query", func(w http.ResponseWriter, r *http.Request) {
		if query(r.Context(), r.URL.Query().Get("q")) != nil {
			w.WriteHeader(500)
		}
	})
	http.HandleFunc("/exec", func(w http.ResponseWriter, r *http.Request) {
		if _, err := db.ExecContext(r.Context(), r.URL.Query().Get("q")); err != nil {
			w.WriteHeader(500)
		}
	})
	// A prepared statement: `op=exec` executes it, else it is queried.
	http.HandleFunc("/prepared", func(w http.ResponseWriter, r *http.Request) {
		stmt, err := db.PrepareContext(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			w.WriteHeader(500)
			return
		}
		defer stmt.Close()
		if r.URL.Query().Get("op") == "exec" {
			_, err = stmt.ExecContext(r.Context(), 7)
		} else {
			var rows *sql.Rows
			if rows, err = stmt.QueryContext(r.Context(), 7); err == nil {
				for rows.Next() {
				}
				err = rows.Close()
			}
		}
		if err != nil {
			w.WriteHeader(500)
		}
	})
	http.HandleFunc("/load", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := 0; i < n; i++ {
			if query(context.Background(), "SELECT n FROM t WHERE id = 7") != nil {
				w.WriteHeader(500)
				return
			}
		}
	})
	http.ListenAndServe("127.0.0.1:"+os.Args[1], nil)
}
