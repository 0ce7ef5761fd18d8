{
  "targets": [
    {
      "target_name": "virt_graph_libvirt",
      "sources": [
        "src/addon.cc",
        "src/connection.cc",
        "src/value.cc",
        "src/errors.cc",
        "src/typed_params.cc",
        "src/host_ops.cc",
        "src/domain_ops.cc",
        "src/snapshot_ops.cc",
        "src/lifecycle_ops.cc",
        "src/migration_ops.cc",
        "src/network_ops.cc",
        "src/storage_ops.cc",
        "src/worker_pool.cc",
        "src/events.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags libvirt)"],
      "cflags_cc!": ["-fno-exceptions"],
      "libraries": ["<!@(pkg-config --libs libvirt)"]
    }
  ]
}
