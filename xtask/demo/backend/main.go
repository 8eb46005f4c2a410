// backend: the demo's downstream service. Answers prices and stock levels from its inventory
// database (an in-memory database/sql driver, inventory.go).
package main

import (
	"database/sql"
	"fmt"
	"net/http"
	"os"
)

func main() {
	sql.Register("inventory", inventoryDriver{})
	db, err := sql.Open("inventory", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/price", func(w http.ResponseWriter, r *http.Request) {
		var price float64
		q := "SELECT price FROM products WHERE sku = $1"
		if err := db.QueryRowContext(r.Context(), q, r.URL.Query().Get("sku")).Scan(&price); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"sku":"odiglet-mug","price":%g}`, price)
	})
	mux.HandleFunc("/stock", func(w http.ResponseWriter, r *http.Request) {
		var count int64
		q := "SELECT in_stock FROM stock WHERE sku = $1 AND warehouse = 'eu-west-1'"
		if err := db.QueryRowContext(r.Context(), q, r.URL.Query().Get("sku")).Scan(&count); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"in_stock":%d}`, count)
	})
	addr := "127.0.0.1:" + os.Args[1]
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
