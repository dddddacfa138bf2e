# lensd container. By default: built on the CUDA 13 devel image (Ubuntu 24.04), run on the
# CUDA runtime image.
#   docker build -t lensd .
#   docker run --gpus all -p 50051:50051 -v /path/to/models:/models:ro lensd \
#       serve --model /models/my-model
# A CPU-only image from any Debian/Ubuntu base (tools/container-check.sh builds one from a
# local Debian 12 image):
#   docker build --build-arg BUILD_IMAGE=debian:12 --build-arg RUNTIME_IMAGE=debian:12 \
#       --build-arg LENSD_CUDA=OFF -t lensd:cpu .
# Without arguments the container serves the built-in model (no weights needed), on every
# visible GPU (--devices auto), else the CPU.
ARG BUILD_IMAGE=nvidia/cuda:13.0.0-devel-ubuntu24.04
ARG RUNTIME_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM ${BUILD_IMAGE} AS build
ARG LENSD_CUDA=ON
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev grpc-proto \
      libabsl-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev \
      nlohmann-json3-dev libsentencepiece-dev libpcre2-dev libutf8proc-dev prometheus-cpp-dev libzip-dev \
      libcpp-httplib-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLENSD_CUDA=${LENSD_CUDA} \
    && targets="lensd lensctl lensd_spm lensd_python" \
    && if [ "${LENSD_CUDA}" = ON ]; then targets="$targets lensd_cuda_module"; fi \
    && cmake --build build --target $targets
# Bundle the binaries with every shared library they need that the runtime image lacks
# (CUDA's own libraries come from the runtime image).
RUN mkdir -p /opt/lensd/bin /opt/lensd/lib /opt/lensd/python \
    && cp build/server/lensd build/client/lensctl build/engine/liblensd_spm.so /opt/lensd/bin/ \
    && if [ -f build/engine/cuda/liblensd_cuda_module.so ]; then \
         cp build/engine/cuda/liblensd_cuda_module.so /opt/lensd/bin/; fi \
    && cp -r build/python/lensd /opt/lensd/python/ \
    && for f in /opt/lensd/bin/*; do ldd "$f"; done | awk '/=> \// {print $3}' | sort -u \
       | grep -vE 'libc\.so|libm\.so|libstdc\+\+|libgcc_s|ld-linux|libcuda|libcublas|libcudart|libnccl' \
       | xargs -r -I{} cp -L {} /opt/lensd/lib/

FROM ${RUNTIME_IMAGE}
# The unprivileged user, written directly (minimal bases may lack useradd).
RUN echo 'lensd:x:10001:10001:lensd:/home/lensd:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'lensd:x:10001:' >> /etc/group \
    && mkdir -p /home/lensd && chown 10001:10001 /home/lensd
COPY --from=build /opt/lensd /opt/lensd
ENV PATH=/opt/lensd/bin:$PATH \
    LD_LIBRARY_PATH=/opt/lensd/lib:/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    PYTHONPATH=/opt/lensd/python \
    LENSD_SPM_MODULE=/opt/lensd/bin/liblensd_spm.so \
    LENSD_CUDA_MODULE=/opt/lensd/bin/liblensd_cuda_module.so \
    HOME=/home/lensd
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["lensctl", "--addr", "127.0.0.1:50051", "--timeout-s", "4", "health"]
ENTRYPOINT ["lensd"]
CMD ["serve", "--port", "50051", "--metrics-port", "9464"]
