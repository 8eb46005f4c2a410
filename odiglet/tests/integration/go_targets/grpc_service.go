package main

import (
	"context"
	"database/sql"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	_ "github.com/lib/pq"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type health struct {
	healthpb.UnimplementedHealthServer
	client func() healthpb.HealthClient
	db     *sql.DB
}

func (h *health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	switch req.Service {
	case "fail":
		return nil, status.Error(codes.Internal, "boom")
	case "missing":
		return nil, status.Error(codes.NotFound, "no such service")
	case "call":
		if _, err := h.client().Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}); err != nil {
			return nil, err
		}
	case "db":
		var n int
		q := "SELECT count(*) FROM pg_class WHERE relname = $1 AND relpages > 42"
		if err := h.db.QueryRowContext(ctx, q, "x").Scan(&n); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func main() {
	addr := "127.0.0.1:" + os.Args[1]
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	// Dialed at the first call, as a lazily connecting client does: odiglet files a socket for
	// traceparent injection when an instrumented process connects it.
	var once sync.Once
	var healthClient healthpb.HealthClient
	client := func() healthpb.HealthClient {
		once.Do(func() {
			conn, err := grpc.Dial(addr, grpc.WithInsecure())
			if err != nil {
				panic(err)
			}
			healthClient = healthpb.NewHealthClient(conn)
		})
		return healthClient
	}
	db, err := sql.Open("postgres", os.Args[3])
	if err != nil {
		panic(err)
	}
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, &health{client: client, db: db})
	go server.Serve(lis)

	http.HandleFunc("/rpc", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if tp := r.URL.Query().Get("tp"); tp != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", tp)
		}
		_, err := client().Check(ctx, &healthpb.HealthCheckRequest{Service: r.URL.Query().Get("service")})
		w.WriteHeader(200 + int(status.Code(err)))
	})
	http.HandleFunc("/sql", func(w http.ResponseWriter, r *http.Request) {
		rows, err := db.QueryContext(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			w.WriteHeader(500)
			return
		}
		for rows.Next() {
		}
		rows.Close()
	})
	// A prepared statement through lib/pq (Parse/Bind/Execute), its argument bound.
	http.HandleFunc("/prepared", func(w http.ResponseWriter, r *http.Request) {
		stmt, err := db.PrepareContext(r.Context(), "SELECT count(*) FROM pg_class WHERE relpages > $1 AND relname <> 'x'")
		if err != nil {
			w.WriteHeader(500)
			return
		}
		defer stmt.Close()
		var n int
		if err := stmt.QueryRowContext(r.Context(), 42).Scan(&n); err != nil {
			w.WriteHeader(500)
		}
	})
	http.HandleFunc("/load-sql", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		q := "SELECT count(*) FROM pg_class WHERE relname = $1 AND relpages > 42"
		for i := 0; i < n; i++ {
			var c int
			if err := db.QueryRowContext(context.Background(), q, "x").Scan(&c); err != nil {
				w.WriteHeader(500)
				return
			}
		}
	})
	http.HandleFunc("/load", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := 0; i < n; i++ {
			if _, err := client().Check(context.Background(), &healthpb.HealthCheckRequest{Service: "ok"}); err != nil {
				w.WriteHeader(500)
				return
			}
		}
	})
	http.ListenAndServe("127.0.0.1:"+os.Args[2], nil)
}
