// backend: the demo's downstream service. Answers prices and stock levels.
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/price", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"sku":"odiglet-mug","price":12.5}`)
	})
	mux.HandleFunc("/stock", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("sku") == "" {
			http.Error(w, "missing sku", http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, `{"in_stock":3}`)
	})
	addr := "127.0.0.1:" + os.Args[1]
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
