# lensd container: build on the CUDA 13 devel image (Ubuntu 24.04), run on the runtime image.
#   docker build -t lensd .
#   docker run --gpus all -p 50051:50051 -v /path/to/models:/models:ro lensd \
#       serve --model /models/my-model
# Without arguments the container serves the built-in model (no weights needed).

FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config git \
      libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev grpc-proto \
      libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev \
      nlohmann-json3-dev libopenblas-dev libsentencepiece-dev libpcre2-dev prometheus-cpp-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLENSD_CUDA=ON \
    && cmake --build build --target lensd lensctl lensd_spm lensd_cuda_module lensd_python
# Bundle the binaries with every shared library they need that the runtime image lacks
# (CUDA's own libraries come from the runtime image).
RUN mkdir -p /opt/lensd/bin /opt/lensd/lib /opt/lensd/python \
    && cp build/server/lensd build/client/lensctl build/engine/liblensd_spm.so \
          build/engine/cuda/liblensd_cuda_module.so /opt/lensd/bin/ \
    && cp -r build/python/lensd /opt/lensd/python/ \
    && for f in /opt/lensd/bin/*; do ldd "$f"; done | awk '/=> \// {print $3}' | sort -u \
       | grep -vE 'libc\.so|libm\.so|libstdc\+\+|libgcc_s|ld-linux|libcuda|libcublas|libcudart|libnccl' \
       | xargs -r -I{} cp -L {} /opt/lensd/lib/

FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04
RUN useradd --create-home --uid 10001 lensd
COPY --from=build /opt/lensd /opt/lensd
ENV PATH=/opt/lensd/bin:$PATH \
    LD_LIBRARY_PATH=/opt/lensd/lib:$LD_LIBRARY_PATH \
    PYTHONPATH=/opt/lensd/python \
    LENSD_SPM_MODULE=/opt/lensd/bin/liblensd_spm.so
USER lensd
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["lensctl", "--addr", "127.0.0.1:50051", "--timeout-s", "4", "health"]
ENTRYPOINT ["lensd"]
CMD ["serve", "--port", "50051", "--metrics-port", "9464"]
