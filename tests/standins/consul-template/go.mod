module consul-template-standin

go 1.19
