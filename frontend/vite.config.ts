import { defineConfig } from 'vitest/config';

// The dashboard is served by the Rust server itself (--static-dir dist), so
// asset paths are relative and there is no dev proxy magic beyond /v1 and /healthz.
const backend = process.env.TICKWIRE_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      '/v1': { target: backend, ws: true, changeOrigin: true },
      '/healthz': backend,
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    // Keep the test run light: the machine's two cores are shared with cargo.
    pool: 'threads',
    poolOptions: { threads: { maxThreads: 1, minThreads: 1 } },
  },
});
